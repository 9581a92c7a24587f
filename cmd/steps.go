package cmd

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/stack"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// stepInfo describes a walkthrough step's command.
type stepInfo struct {
	name, short, long string
}

var stepInfos = []stepInfo{
	{"deploy", "Deploy the vLLM server: token Secret, Deployment and Service",
		`Create or update the Hugging Face token Secret, the vLLM Deployment and its
ClusterIP Service, then wait until the Deployment is Available at its current
generation, its pods are Ready and the Service has ready endpoints. While
waiting it says why not (scheduling, GPU quota, image pulls, crash loops).`},
	{"monitor", "Have Managed Prometheus scrape vLLM's /metrics (PodMonitoring)",
		`Create or update the PodMonitoring that has Managed Prometheus scrape the
vLLM pods' /metrics, then wait for ConfigurationCreateSuccess at the current
generation (and healthy targets where target status is on).`},
	{"adapter", "Install the Custom Metrics Stackdriver Adapter",
		`Install the Custom Metrics Stackdriver Adapter (namespace, service account,
RBAC, Deployment, Service, the custom and external metrics APIServices), then
wait for the Deployment and all three APIServices to be Available. An
APIService served by another metrics provider is reported before anything is
written and left alone unless --force-conflicts is given.`},
	{"identity", "Give the adapter Workload Identity to read Cloud Monitoring",
		`Give the adapter's Kubernetes service account Workload Identity.

gsa mode (the walkthrough's route, the default): create the Google service
account if missing, grant it roles/monitoring.viewer on the project, let the
adapter's KSA impersonate it (roles/iam.workloadIdentityUser) and annotate
the KSA. direct mode: grant roles/monitoring.viewer straight to the KSA's
Workload Identity Federation principal. Every IAM change adds only this
stack's member, by an etag-guarded read-modify-write.`},
	{"hpa", "Create the HorizontalPodAutoscaler on the vLLM metric",
		`Create or update the HPA that scales the vLLM Deployment on
prometheus.googleapis.com|<metric>|gauge, then wait until it is AbleToScale and
ScalingActive with ValidMetricFound, showing the current value.`},
}

// runOptions are the options of a command that runs steps.
type runOptions struct {
	*globalOptions
	command      string
	steps        []string
	dryRun       bool
	timeout      time.Duration
	keepWorkload bool // cleanup
	cfg          *config.Config
}

func (o *runOptions) addFlags(c *cobra.Command, what string) {
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what "+what+" (objects and Google API calls) and change nothing")
	c.Flags().DurationVar(&o.timeout, "timeout", 0, "how long each step waits for its conditions (default: the step's timeouts.* setting)")
}

// Complete loads and validates the configuration.
func (o *runOptions) Complete(cmd *cobra.Command) (err error) {
	if o.cfg, err = o.loadConfig(cmd); err != nil {
		return err
	}
	if o.timeout < 0 {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --timeout %s: must be positive", o.timeout))
	}
	if o.timeout > 0 {
		t := &o.cfg.Timeouts
		t.Deploy, t.Monitor, t.Adapter, t.HPA, t.Cleanup = o.timeout, o.timeout, o.timeout, o.timeout, o.timeout
	}
	return nil
}

// Run applies (or, for cleanup, deletes) the steps in order.
func (o *runOptions) Run(ctx context.Context) error {
	if o.dryRun {
		s := stack.New(o.cfg, stack.Deps{})
		return o.printPlans(ctx, s, o.steps)
	}
	if o.command != "cleanup" {
		if err := stack.New(o.cfg, stack.Deps{}).Preflight(o.steps); err != nil {
			return err
		}
	}
	rec := output.NewRecorder(o.streams)
	defer rec.Close()
	start := time.Now()
	deps, closeDeps, err := o.dependencies(ctx, rec, o.steps)
	if err != nil {
		return err
	}
	defer closeDeps()
	s := stack.New(o.cfg, deps)
	var runErr error
	if o.command != "cleanup" && o.cfg.Cluster != "" {
		// The cluster's preconditions, before anything changes.
		rec.StepStarted("preconditions")
		_, err := s.Preconditions(ctx, deps)
		rec.StepDone("preconditions", err)
		if err != nil {
			return o.printRun(rec, start, err)
		}
	}
	for _, name := range o.steps {
		st, err := s.Step(name)
		if err != nil {
			return err
		}
		rec.StepStarted(name)
		if o.command == "cleanup" {
			err = st.Delete(ctx)
		} else {
			err = st.Apply(ctx)
		}
		rec.StepDone(name, err)
		if err != nil {
			runErr = fmt.Errorf("%s: %w", name, err)
			break
		}
	}
	return o.printRun(rec, start, runErr)
}

// dependencies opens the connections the steps need: Kubernetes always;
// the Google APIs when the identity step runs or a cluster is named (for
// its preconditions, and to connect through the container API when no
// kubeconfig or context is given: what CI pipelines want, no kubeconfig
// and no gcloud).
func (o *runOptions) dependencies(ctx context.Context, rec *output.Recorder, steps []string) (stack.Deps, func(), error) {
	return o.dependenciesGCP(ctx, rec, steps, false)
}

// dependenciesGCP is dependencies where, with gcpOptional, Google APIs that
// cannot be reached (no credentials) leave the identity step to report it
// rather than stop a read-only command.
func (o *runOptions) dependenciesGCP(ctx context.Context, rec *output.Recorder, steps []string, gcpOptional bool) (stack.Deps, func(), error) {
	deps := stack.Deps{ForceConflicts: o.cfg.Kube.ForceConflicts}
	if rec != nil {
		deps.Report = rec
	}
	closer := func() {}
	kc := o.cfg.Kube
	viaGKE := o.cfg.Cluster != "" && kc.Kubeconfig == "" && kc.Context == ""
	gopts := gcp.Options{Impersonate: o.cfg.Identity.ImpersonateAccount}
	if viaGKE {
		ts, err := gcp.TokenSource(ctx, gopts)
		if err != nil {
			return deps, closer, exitcode.With(exitcode.Precondition, err)
		}
		gopts.TokenSource = ts
	}
	if contains(steps, "identity") || o.cfg.Cluster != "" {
		e := o.cfg.Endpoints
		g, err := gcp.Dial(ctx, gopts, gcp.Endpoints{IAM: e.IAM, ResourceManager: e.ResourceManager, Container: e.Container}, contains(steps, "identity"))
		switch {
		case err != nil && gcpOptional && !viaGKE:
			deps.GCPError = err
		case err != nil:
			return deps, closer, exitcode.With(exitcode.Precondition, err)
		default:
			deps.GCP, closer = g, g.Close
		}
	}
	var rc *rest.Config
	var err error
	if viaGKE {
		if deps.Cluster, err = deps.GCP.Cluster(ctx, o.cfg.Project, o.cfg.Location, o.cfg.Cluster); err == nil {
			rc, err = gcp.RESTConfig(deps.Cluster, gopts.TokenSource)
		}
	} else {
		rc, err = kube.RESTConfigFromKubeconfig(kube.KubeconfigOptions{Path: kc.Kubeconfig, Context: kc.Context})
	}
	if err == nil {
		if o.verbose >= 2 {
			rc.Wrap(output.TraceTransport(o.streams.ErrOut))
		}
		deps.Kube, err = kube.New(rc)
	}
	if err != nil {
		closer()
		if exitcode.Of(err) == exitcode.Failure {
			err = exitcode.With(exitcode.Precondition, err)
		}
		return deps, func() {}, err
	}
	return deps, closer, nil
}

// runJSON is the --output json/yaml document of a run.
type runJSON struct {
	Command  string               `json:"command"`
	OK       bool                 `json:"ok"`
	ExitCode int                  `json:"exitCode"`
	Error    string               `json:"error,omitempty"`
	Seconds  float64              `json:"seconds"`
	Steps    []*output.StepRecord `json:"steps"`
}

func (o *runOptions) printRun(rec *output.Recorder, start time.Time, runErr error) error {
	doc := runJSON{
		Command: o.command, OK: runErr == nil, ExitCode: exitcode.Of(runErr),
		Seconds: time.Since(start).Round(time.Millisecond).Seconds(), Steps: rec.Steps(),
	}
	if runErr != nil {
		doc.Error = runErr.Error()
	}
	done := map[string]bool{}
	for _, s := range doc.Steps {
		done[s.Step] = true
	}
	for _, name := range o.steps {
		if !done[name] {
			doc.Steps = append(doc.Steps, &output.StepRecord{Step: name, Actions: []string{}, Checks: []step.Result{}, Status: "not-run"})
		}
	}
	if done, err := o.printDoc(doc); done {
		if err != nil {
			return err
		}
	} else {
		status := "done"
		if runErr != nil {
			status = "stopped"
		}
		var left []string
		for _, s := range doc.Steps {
			if s.Status == "not-run" {
				left = append(left, s.Step)
			}
		}
		fmt.Fprintf(o.streams.Out, "%s %s in %.1fs", o.command, status, doc.Seconds)
		if len(left) > 0 {
			fmt.Fprintf(o.streams.Out, "; not run: %v", left)
		}
		fmt.Fprintln(o.streams.Out)
	}
	return runErr
}

func newStepCmds(g *globalOptions) []*cobra.Command {
	var cmds []*cobra.Command
	for _, info := range stepInfos {
		o := &runOptions{globalOptions: g, command: info.name, steps: []string{info.name}}
		c := &cobra.Command{
			Use:   info.name,
			Short: info.short,
			Long:  info.long,
			Args:  noArgs,
			RunE:  o.runE,
		}
		o.addFlags(c, "this step would create or change")
		cmds = append(cmds, c)
	}
	return cmds
}

func (o *runOptions) runE(cmd *cobra.Command, args []string) error {
	if err := o.Complete(cmd); err != nil {
		return err
	}
	return o.Run(cmd.Context())
}

func newUpCmd(g *globalOptions) *cobra.Command {
	o := &runOptions{globalOptions: g, command: "up", steps: stack.Order}
	c := &cobra.Command{
		Use:   "up",
		Short: "Run every step in the walkthrough's order: deploy, monitor, adapter, identity, hpa",
		Long: `Run every step in the walkthrough's order (deploy, monitor, adapter, identity,
hpa). Each step is idempotent: a re-run changes nothing that is already right.`,
		Args: noArgs,
		RunE: o.runE,
	}
	o.addFlags(c, "every step would create or change")
	return c
}

func newCleanupCmd(g *globalOptions) *cobra.Command {
	o := &runOptions{globalOptions: g, command: "cleanup"}
	c := &cobra.Command{
		Use:   "cleanup [STEP...]",
		Short: "Delete what vllm-hpa created, in reverse order, and nothing else",
		Long: `Delete the stack in reverse order (hpa, identity, adapter, monitor, deploy),
or only the named steps (still in reverse order).
Only objects carrying the ownership label app.kubernetes.io/managed-by=vllm-hpa
and this instance's label are deleted, and each is waited for until it is
gone; a namespace that holds objects vllm-hpa did not create is left in place.
IAM changes remove only this stack's members; the Google service account is
deleted only if vllm-hpa created it. A second run changes nothing.`,
		Example:   "  vllm-hpa cleanup --project my-proj\n  vllm-hpa cleanup hpa adapter --project my-proj",
		ValidArgs: stack.Order,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, a := range args {
				if !contains(stack.Order, a) {
					return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid step %q: must be one of %v", a, stack.Order))
				}
			}
			o.steps = nil
			for _, name := range reversed(stack.Order) {
				if (len(args) == 0 || contains(args, name)) && !(o.keepWorkload && name == "deploy") {
					o.steps = append(o.steps, name)
				}
			}
			return o.runE(cmd, nil)
		},
	}
	o.addFlags(c, "would be deleted")
	c.Flags().BoolVar(&o.keepWorkload, "keep-workload", false, "keep the vLLM Deployment, Service and Secret")
	return c
}

func reversed(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[len(in)-1-i] = s
	}
	return out
}
