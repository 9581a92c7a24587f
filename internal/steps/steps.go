// Package steps is the walkthrough's one ordered list of steps: up applies
// it in order, cleanup deletes it in reverse, verify and status check it,
// and the command line has a command per step. Each step is a package of
// its own (internal/steps/<name>, beside its template in templates/);
// adding one is that package and a line here.
package steps

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/api/container/v1"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/adapter"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/deploy"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/hpa"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/identity"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/monitor"
)

// Ordered are the walkthrough's steps, in its order.
var Ordered = []step.Definition{
	deploy.Definition{},
	monitor.Definition{},
	adapter.Definition{},
	identity.Definition{},
	hpa.Definition{},
}

// Names are the steps' names in order.
func Names() []string {
	out := make([]string, len(Ordered))
	for i, d := range Ordered {
		out[i] = d.Name()
	}
	return out
}

// Lookup finds a step by name.
func Lookup(name string) (step.Definition, bool) {
	for _, d := range Ordered {
		if d.Name() == name {
			return d, true
		}
	}
	return nil, false
}

// Settings are the keys the named steps (all, with none) take as flags,
// each once, in the steps' order.
func Settings(names ...string) []string {
	var keys []string
	for _, d := range Ordered {
		if len(names) > 0 && !slices.Contains(names, d.Name()) {
			continue
		}
		for _, k := range d.Settings() {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// ReadSettings are Settings without those that say how to change what
// exists (config.ChangeKeys): a read-only command's flags.
func ReadSettings() []string {
	return slices.DeleteFunc(Settings(), func(k string) bool { return slices.Contains(config.ChangeKeys, k) })
}

// Requires is what the named steps need, together, with cfg (a step its
// backend does not use needs nothing).
func Requires(cfg *config.Config, names []string) step.Requirements {
	var r step.Requirements
	for _, n := range names {
		d, ok := Lookup(n)
		if !ok || !Used(d, cfg) {
			continue
		}
		if q, ok := d.(step.Requirer); ok {
			need := q.Requires(cfg)
			r.Token = r.Token || need.Token
			r.ExplainsWithGoogle = r.ExplainsWithGoogle || need.ExplainsWithGoogle
		}
		if p, ok := d.(step.Preconditioner); ok && len(p.Services(cfg)) > 0 {
			r.GoogleAPIs = true
		}
	}
	return r
}

// GoogleSteps are the named steps that call Google APIs with cfg, in order.
func GoogleSteps(cfg *config.Config, names []string) []string {
	var out []string
	for _, d := range Ordered {
		if p, ok := d.(step.Preconditioner); ok && slices.Contains(names, d.Name()) && Used(d, cfg) && len(p.Services(cfg)) > 0 {
			out = append(out, d.Name())
		}
	}
	return out
}

// RequiredServices are the Google APIs the named steps call with cfg.
func RequiredServices(cfg *config.Config, names []string) []string {
	return requiredServices(cfg, names, false)
}

// Shared reports whether a step's objects are shared by every instance on
// the cluster (a Definition that says so).
func Shared(d step.Definition) bool {
	s, ok := d.(interface{ Shared() bool })
	return ok && s.Shared()
}

// Rendered are the steps that have objects of their own to render, in
// order.
func Rendered() []render.Source {
	var out []render.Source
	for _, d := range Ordered {
		if render.Has(d.Name()) {
			out = append(out, render.Source{Step: d.Name(), Shared: Shared(d)})
		}
	}
	return out
}

// Stack is every step built for one configuration and its clients.
type Stack struct {
	steps []step.Step
	cfg   *config.Config
	deps  step.Deps
}

// New builds every step; one its backend does not use (see Used) applies
// and checks as "not used", and is still cleaned up.
func New(cfg *config.Config, deps step.Deps) *Stack {
	s := &Stack{cfg: cfg, deps: deps}
	for _, d := range Ordered {
		st := d.New(cfg, deps)
		if !Used(d, cfg) {
			u := &unused{Step: st, report: deps.Reporter(), why: "not used with hpa.backend " + cfg.HPA.Backend + " (GKE serves the metric: no adapter, no IAM)"}
			if d.Name() == identity.Name && deps.GCP == nil {
				// Cleanup of a native stack without Google credentials:
				// nothing of this instance is in IAM unless it used the
				// adapter route.
				u.mayPass = func(ctx context.Context) (bool, error) {
					used, err := s.usesAdapter(ctx)
					return !used, err
				}
			}
			st = u
		}
		s.steps = append(s.steps, st)
	}
	return s
}

// Deps are the clients the stack's steps act through.
func (s *Stack) Deps() step.Deps { return s.deps }

// Used reports whether cfg's backend uses the step.
func Used(d step.Definition, cfg *config.Config) bool {
	u, ok := d.(step.BackendUser)
	return !ok || u.UsedWith(cfg)
}

// Step returns the named step.
func (s *Stack) Step(name string) (step.Step, error) {
	for _, st := range s.steps {
		if st.Name() == name {
			return st, nil
		}
	}
	return nil, exitcode.With(exitcode.BadInput, fmt.Errorf("unknown step %q: one of %s", name, strings.Join(Names(), ", ")))
}

// Preconditions checks, before anything changes, what the stack needs of
// the cluster and the project: the cluster as the container API describes
// it, when it is known (--cluster, or a GKE kubeconfig context) and Google
// APIs can be called; and, when the named steps call Google APIs, that the
// Cloud Monitoring API is enabled. Each failure names its gcloud fix.
func Preconditions(ctx context.Context, cfg *config.Config, deps step.Deps, names []string) ([]step.Result, error) {
	report := deps.Reporter()
	// A throttled or flaky read is retried; the wait is said here too.
	ctx = gcp.WithNotice(ctx, func(msg string) { report.Waiting("preconditions", msg) })
	var results []step.Result
	var failed []string
	denied := 0 // failures that are the caller's missing permissions
	addResult := func(check string, ok bool, message, fix string, isDenied bool) {
		r := step.Result{Step: "preconditions", Check: check, OK: ok, Message: message}
		if !ok {
			r.Reason = "NotMet"
			if isDenied {
				r.Reason, denied = "Denied", denied+1
			}
			r.Message += "; fix: " + fix
			failed = append(failed, r.Message)
		}
		report.Result(r)
		results = append(results, r)
	}
	add := func(check string, ok bool, message, fix string) { addResult(check, ok, message, fix, false) }
	addPrecondition := func(p gcp.Precondition) { addResult(p.Check, p.OK, p.Message, p.Fix, p.Denied) }
	location, cluster := NamedCluster(cfg, deps)
	disabled, err := checkServices(ctx, cfg, deps, names, cluster != "", add)
	if err != nil {
		return results, err
	}
	switch {
	case cluster == "":
		report.Action("preconditions", "cluster preconditions not checked: no --cluster/--location given, and the kubeconfig context is not a GKE one (gke_PROJECT_LOCATION_CLUSTER)")
	case deps.GCP == nil:
		report.Action("preconditions", "cluster "+cluster+" not checked: no Google API clients (the steps run need none)")
	case deps.Cluster == nil && slices.Contains(disabled, gcp.ServiceContainer):
		report.Action("preconditions", "cluster "+cluster+" not checked: the Kubernetes Engine API cannot be read (see google apis)")
	default:
		c, err := ReadCluster(ctx, cfg, &deps)
		if err != nil {
			return results, err
		}
		precs, err := clusterPreconditions(ctx, cfg, deps, c, location, cluster, names)
		if err != nil {
			return results, err
		}
		for _, p := range precs {
			addPrecondition(p)
		}
	}
	if deps.GCP != nil {
		for _, d := range Ordered {
			p, ok := d.(step.ProjectPreconditioner)
			if !ok || !slices.Contains(names, d.Name()) || !Used(d, cfg) {
				continue
			}
			if svc, _ := d.(step.Preconditioner); svc != nil && slices.ContainsFunc(svc.Services(cfg), func(s string) bool { return slices.Contains(disabled, s) }) {
				continue // an API it calls is off: said under google apis
			}
			precs, err := p.ProjectPreconditions(ctx, cfg, deps)
			if err != nil {
				return results, err
			}
			for _, p := range precs {
				addPrecondition(p)
			}
		}
	}
	if Requires(cfg, names).GoogleAPIs && deps.GCP != nil && !cfg.Native() && len(failed) == 0 {
		// The project first: a --project that does not exist is refused
		// here, before anything is created in it.
		p, err := deps.GCP.Project(ctx, cfg.Project)
		if err != nil {
			return results, err
		}
		add("project", true, cfg.Project+" ("+p.Name+")", "")
	}
	if len(failed) > 0 && denied == len(failed) {
		return results, exitcode.With(exitcode.Denied, fmt.Errorf("the caller lacks permissions the stack needs (nothing was changed):\n  %s", strings.Join(failed, "\n  ")))
	}
	if len(failed) > 0 {
		return results, exitcode.With(exitcode.Precondition, fmt.Errorf("the cluster or project is not ready for the stack (nothing was changed):\n  %s", strings.Join(failed, "\n  ")))
	}
	return results, nil
}

// NamedCluster is the GKE cluster the run is on: the configuration's
// cluster and location, else the ones a gke_ kube context names ("" when
// neither does).
func NamedCluster(cfg *config.Config, deps step.Deps) (location, name string) {
	if cfg.Cluster != "" {
		return cfg.Location, cfg.Cluster
	}
	return deps.ClusterLocation, deps.ClusterName
}

// ReadCluster is the NamedCluster as the container API describes it, read
// once and then kept in deps.Cluster; nil without an error when no
// cluster is named or there are no Google clients.
func ReadCluster(ctx context.Context, cfg *config.Config, deps *step.Deps) (*container.Cluster, error) {
	location, name := NamedCluster(cfg, *deps)
	if deps.Cluster != nil || name == "" || deps.GCP == nil {
		return deps.Cluster, nil
	}
	c, err := deps.GCP.Cluster(ctx, cfg.Project, location, name)
	if err != nil {
		return nil, err
	}
	deps.Cluster = c
	return c, nil
}

// checkServices reads, in one Service Usage batchGet, whether every Google
// API a run of the named steps calls (or the stack needs) is enabled, and
// adds the check; it returns the disabled ones. What cannot be read (the
// caller may not, or Service Usage itself is off) is said and not
// checked: a disabled API still stops the call that needs it, exit 5,
// naming it.
func checkServices(ctx context.Context, cfg *config.Config, deps step.Deps, names []string, viaContainer bool, add func(check string, ok bool, message, fix string)) ([]string, error) {
	services := requiredServices(cfg, names, viaContainer)
	if deps.GCP == nil || len(services) == 0 {
		return nil, nil
	}
	report := deps.Reporter()
	disabled, err := deps.GCP.DisabledServices(ctx, cfg.Project, services)
	switch {
	case errors.Is(err, gcp.ErrServiceUsageOff):
		report.Action("preconditions", "APIs not checked: the Service Usage API is off on project "+cfg.Project+" (enable it with them if you like: "+gcp.EnableCommand(cfg.Project, append(services, gcp.ServiceServiceUsage))+")")
	case exitcode.Of(err) == exitcode.Denied:
		report.Action("preconditions", "APIs not checked: the caller may not read Service Usage (serviceusage.services.get, e.g. roles/serviceusage.serviceUsageViewer): "+strings.Join(services, ", "))
	case err != nil:
		return nil, err
	case len(disabled) > 0:
		add("google apis", false, "not enabled on project "+cfg.Project+": "+strings.Join(disabled, ", "), gcp.EnableCommand(cfg.Project, disabled))
	default:
		add("google apis", true, "enabled: "+strings.Join(services, ", "), "")
	}
	return disabled, nil
}

// CheckServices is the API check alone, for a command that writes without
// the cluster's preconditions (cleanup), or whose connection found one API
// off (a cluster read through the container API): every API the named
// steps call, in one list, exit 5 when any is off.
func CheckServices(ctx context.Context, cfg *config.Config, deps step.Deps, names []string) error {
	var failed []string
	ctx = gcp.WithNotice(ctx, func(msg string) { deps.Reporter().Waiting("preconditions", msg) })
	_, err := checkServices(ctx, cfg, deps, names, cfg.Cluster != "" || deps.ClusterName != "", func(check string, ok bool, message, fix string) {
		r := step.Result{Step: "preconditions", Check: check, OK: ok, Message: message}
		if !ok {
			r.Reason, r.Message = "NotMet", message+"; fix: "+fix
			failed = append(failed, r.Message)
		}
		deps.Reporter().Result(r)
	})
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("Google APIs the run calls are not enabled (nothing was changed):\n  %s", strings.Join(failed, "\n  ")))
	}
	return nil
}

// clusterPreconditions judges the cluster c: its control plane's version,
// what each named step that the backend uses needs of it
// (step.Preconditioner), and on Autopilot the pods the named steps create
// against Autopilot's rules.
func clusterPreconditions(ctx context.Context, cfg *config.Config, deps step.Deps, c *container.Cluster, location, cluster string, names []string) ([]gcp.Precondition, error) {
	facts := step.ClusterFacts{Config: cfg, Deps: deps, Cluster: c,
		Wants: gcp.ClusterWants{Project: cfg.Project, Location: location, Cluster: cluster, Accelerator: cfg.Workload.Accelerator}}
	precs := []gcp.Precondition{gcp.MasterVersion(c, facts.Wants)}
	for _, d := range Ordered {
		p, ok := d.(step.Preconditioner)
		if !ok || !slices.Contains(names, d.Name()) || !Used(d, cfg) {
			continue
		}
		more, err := p.Preconditions(ctx, facts)
		if err != nil {
			return nil, err
		}
		// Two steps may need one thing (deploy's model bucket and
		// identity both need the Workload Identity pool): said once.
		for _, m := range more {
			if !slices.ContainsFunc(precs, func(p gcp.Precondition) bool { return p.Check == m.Check }) {
				precs = append(precs, m)
			}
		}
	}
	if c.Autopilot != nil && c.Autopilot.Enabled {
		precs = append(precs, autopilotRules(cfg, names)...)
	}
	return precs, nil
}

// autopilotRules checks the pods the named steps create against
// Autopilot's admission rules, which would refuse them at creation.
func autopilotRules(cfg *config.Config, names []string) []gcp.Precondition {
	var out []gcp.Precondition
	for _, d := range Rendered() {
		if !slices.Contains(names, d.Step) {
			continue
		}
		objs, err := render.Objects(cfg, d.Step, d.Shared)
		if err != nil {
			continue
		}
		for _, o := range objs {
			if o.GetKind() != "Deployment" {
				continue
			}
			dep, err := kube.Convert[appsv1.Deployment](o)
			if err != nil {
				continue
			}
			p := gcp.Precondition{Check: "autopilot rules " + o.GetName(), OK: true, Message: "the pods meet Autopilot's rules"}
			if v := gcp.AutopilotViolations(dep.Spec.Template.Spec); len(v) > 0 {
				p.OK, p.Message, p.Fix = false, "Autopilot would refuse the pods of Deployment "+o.GetName()+": "+strings.Join(v, "; "), "change the settings named ("+gcp.AutopilotRulesPage+")"
			}
			out = append(out, p)
		}
	}
	return out
}

// requiredServices are the Google APIs a run of the named steps calls, or
// that the stack it builds needs enabled: the container API when the
// cluster is read through it, and each named step's that the backend uses
// (step.Preconditioner).
func requiredServices(cfg *config.Config, names []string, viaContainer bool) []string {
	var out []string
	if viaContainer {
		out = append(out, gcp.ServiceContainer)
	}
	for _, d := range Ordered {
		if p, ok := d.(step.Preconditioner); ok && slices.Contains(names, d.Name()) && Used(d, cfg) {
			for _, svc := range p.Services(cfg) {
				if !slices.Contains(out, svc) {
					out = append(out, svc)
				}
			}
		}
	}
	return out
}

// Probes are the steps' extra sections of verify (step.Prober), in the
// steps' order.
func Probes() []step.Probe {
	var out []step.Probe
	for _, d := range Ordered {
		if p, ok := d.(step.Prober); ok {
			out = append(out, p.Probe())
		}
	}
	return out
}
