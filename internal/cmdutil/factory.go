// Package cmdutil is what every command is built from: a Factory that holds
// the command's streams and environment and opens its clients lazily, only
// once the command's input is known to be good.
package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"k8s.io/client-go/rest"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/environ"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Factory holds what a command needs from its process, and builds clients
// on demand. Tests build one with their own streams and environment.
type Factory struct {
	IOStreams *iostreams.IOStreams
	Env       environ.Env
	// Trace, if set, adjusts the Kubernetes client configuration (-vv
	// wraps its transport to print each request).
	Trace func(*rest.Config)
	// Connector, if set, is Connect: a test's fake clients, or its
	// failure to connect, in place of the real connection.
	Connector func(ctx context.Context, cfg *config.Config, need Need, rec *output.Progress) (step.Deps, error)

	mu     sync.Mutex
	closer []func()
}

// New is a Factory for streams and env.
func New(streams *iostreams.IOStreams, env environ.Env) *Factory {
	return &Factory{IOStreams: streams, Env: env}
}

// Close closes every client the factory opened.
func (f *Factory) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.closer) - 1; i >= 0; i-- {
		f.closer[i]()
	}
	f.closer = nil
}

// Need says which clients a command needs.
type Need struct {
	// GoogleAPIs: the IAM, Resource Manager and Cloud Monitoring clients
	// (as step.Requirements.GoogleAPIs: the identity step, and the hpa
	// step that explains with them).
	GoogleAPIs bool
	// GCPOptional: Google APIs that cannot be reached (no credentials)
	// are reported by the steps that need them instead of stopping a
	// read-only command.
	GCPOptional bool
	// NoKube: no Kubernetes connection (load against an --endpoint).
	NoKube bool
}

// KubeconfigOptions are cfg's kubeconfig selection in the command's
// environment.
func (f *Factory) KubeconfigOptions(cfg *config.Config) kube.KubeconfigOptions {
	return kube.KubeconfigOptions{Path: cfg.Kube.Kubeconfig, Context: cfg.Kube.Context, Env: f.Env}
}

// ViaGKE reports whether cfg connects to the cluster through the container
// API (--cluster and --location, no kubeconfig or context given).
func ViaGKE(cfg *config.Config) bool {
	return cfg.Cluster != "" && cfg.Kube.Kubeconfig == "" && cfg.Kube.Context == ""
}

// KubeContextDefaults fills, from the kubeconfig's context, what the
// user left unset, as kubectl and gcloud users expect: the namespace of
// the context (workload.namespace), and the project of a context gcloud
// named gke_PROJECT_LOCATION_CLUSTER when no flag, environment variable,
// file or Google tool configuration gave one. A kubeconfig that does not
// load changes nothing here (CheckConnection reports it).
//
// A project taken from Google's tools that differs from the one a gke_
// context names is bad input: IAM would be changed in one project for a
// cluster of the other. Given by flag, variable or file, the project is
// the user's word and stands.
func (f *Factory) KubeContextDefaults(cfg *config.Config) error {
	if ViaGKE(cfg) {
		return nil
	}
	name, namespace, ok := kube.ContextOf(f.KubeconfigOptions(cfg))
	if !ok {
		return nil
	}
	if namespace != "" && !cfg.Given("workload.namespace") {
		cfg.Workload.Namespace = namespace
		cfg.SetOrigin("workload.namespace", "kube context "+name)
	}
	project, _, _, gke := kube.GKEContext(name)
	switch {
	case !gke || cfg.Given("project"):
	case cfg.Origin("project") == "":
		cfg.Project = project
		cfg.SetOrigin("project", "kube context "+name)
	case project != cfg.Project:
		return config.NewFieldError("project", cfg.Project, fmt.Sprintf("the project of the cluster: %s gives %s, but the kube context %s is a cluster of %s; give --project", cfg.Origin("project"), cfg.Project, name, project))
	}
	return nil
}

// CheckConnection proves, without a request, that cfg can connect: a
// kubeconfig that loads and names a usable context. Bad --kubeconfig or
// --context values exit 2 naming the setting; no kubeconfig at all exits 5
// with how to get one.
func (f *Factory) CheckConnection(cfg *config.Config) error {
	if ViaGKE(cfg) {
		return nil
	}
	err := kube.CheckKubeconfig(f.KubeconfigOptions(cfg))
	var ke *kube.KubeconfigError
	if !errors.As(err, &ke) {
		return err
	}
	if ke.Setting == "" {
		return exitcode.With(exitcode.Precondition, err)
	}
	return exitcode.With(exitcode.BadInput, config.NewFieldError(ke.Setting, ke.Value, ke.Problem))
}

// Connect opens the clients cfg's command needs, reporting to rec (may be
// nil): Kubernetes by kubeconfig, or through the container API when a
// cluster is named without a kubeconfig (what CI wants: no kubeconfig and
// no gcloud); the Google APIs when identity runs or a cluster is named
// (for its preconditions).
func (f *Factory) Connect(ctx context.Context, cfg *config.Config, need Need, rec *output.Progress) (step.Deps, error) {
	if f.Connector != nil {
		return f.Connector(ctx, cfg, need, rec)
	}
	deps := step.Deps{ForceConflicts: cfg.Kube.ForceConflicts, Adopt: cfg.Adopt}
	if rec != nil {
		deps.Report = rec
	}
	viaGKE := ViaGKE(cfg) && !need.NoKube
	// A cluster named by the kubeconfig is reached first: a cluster that
	// is down is the first thing to say, whatever else is missing.
	if !viaGKE && !need.NoKube {
		rc, err := kube.RESTConfigFromKubeconfig(f.KubeconfigOptions(cfg))
		if err != nil {
			return deps, connectError(err)
		}
		// A context gcloud wrote names its cluster, whose preconditions
		// can then be read like those of --cluster.
		if name, _, ok := kube.ContextOf(f.KubeconfigOptions(cfg)); ok {
			if project, location, cluster, ok := kube.GKEContext(name); ok && project == cfg.Project {
				deps.ClusterName, deps.ClusterLocation = cluster, location
			}
		}
		if deps.Kube, err = f.kubeClient(ctx, cfg, rc); err != nil {
			return deps, err
		}
	}
	gopts := gcp.Options{Impersonate: cfg.Identity.ImpersonateAccount, CredentialsFile: f.Env.Path(f.Env.Get("GOOGLE_APPLICATION_CREDENTIALS"))}
	if viaGKE {
		ts, err := gcp.TokenSource(ctx, gopts)
		if err != nil {
			return deps, exitcode.With(exitcode.Precondition, err)
		}
		gopts.TokenSource = ts
	}
	deps.OpenStorage = gcp.OpenStorage(gopts, cfg.Endpoints.Storage)
	if need.GoogleAPIs || cfg.Cluster != "" {
		e := cfg.Endpoints
		g, err := gcp.Dial(ctx, gopts, gcp.Endpoints{IAM: e.IAM, ResourceManager: e.ResourceManager, Container: e.Container, ServiceUsage: e.ServiceUsage, Monitoring: e.Monitoring, Storage: e.Storage}, need.GoogleAPIs)
		switch {
		case err != nil && need.GCPOptional && !viaGKE:
			deps.GCPError = err
		case err != nil:
			return deps, exitcode.With(exitcode.Precondition, err)
		default:
			deps.GCP = g
			f.onClose(g.Close)
		}
	}
	if !viaGKE {
		return deps, nil
	}
	var err error
	var rc *rest.Config
	if deps.Cluster, err = deps.GCP.Cluster(ctx, cfg.Project, cfg.Location, cfg.Cluster); err == nil {
		rc, err = gcp.RESTConfig(deps.Cluster, gopts.TokenSource, cfg.EndpointType)
	}
	if err != nil {
		return deps, connectError(err)
	}
	deps.Kube, err = f.kubeClient(ctx, cfg, rc)
	return deps, err
}

// kubeClient is the client for rc, once the API server is known to accept
// connections.
func (f *Factory) kubeClient(ctx context.Context, cfg *config.Config, rc *rest.Config) (*kube.Client, error) {
	if f.Trace != nil {
		f.Trace(rc)
	}
	c, err := kube.New(rc, f.Env)
	if err != nil {
		return nil, connectError(err)
	}
	if err := kube.Reachable(ctx, rc); err != nil {
		return nil, exitcode.With(exitcode.Precondition, Unreachable(cfg, err))
	}
	return c, nil
}

// connectError makes an unclassified failure to connect exit 5.
func connectError(err error) error {
	if exitcode.Of(err) == exitcode.Failure {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("connect to the cluster: %w", err))
	}
	return err
}

// Unreachable explains a cluster that does not answer, naming how it was
// chosen.
func Unreachable(cfg *config.Config, err error) error {
	via := "the kubeconfig's current context"
	if cfg.Kube.Context != "" {
		via = "context " + cfg.Kube.Context
	}
	if ViaGKE(cfg) {
		via = "cluster " + cfg.Cluster + " in " + cfg.Location
	}
	return fmt.Errorf("the cluster does not answer (%s): %v; check that it is running and reachable from here, the context, and your credentials", via, err)
}

func (f *Factory) onClose(c func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closer = append(f.closer, c)
}
