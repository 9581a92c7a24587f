package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
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
ClusterIP Service, then wait until the Deployment is Available, its pods are
Ready and the Service has ready endpoints.`},
	{"monitor", "Have Managed Prometheus scrape vLLM's /metrics (PodMonitoring)",
		`Create or update the PodMonitoring that has Managed Prometheus scrape the
vLLM pods' /metrics, then wait for ConfigurationCreateSuccess at the current
generation.`},
	{"adapter", "Install the Custom Metrics Stackdriver Adapter",
		`Install the Custom Metrics Stackdriver Adapter (namespace, service account,
RBAC, Deployment, Service, the custom and external metrics APIServices), then
wait for the Deployment and all three APIServices to be Available. An
APIService owned by another metrics provider is reported and left alone
unless --force-conflicts is given.`},
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
ScalingActive with ValidMetricFound.`},
}

// stepOptions are the options of a command that applies steps.
type stepOptions struct {
	*globalOptions
	dryRun bool
	steps  []string
	cfg    *config.Config
}

func (o *stepOptions) Complete(cmd *cobra.Command) (err error) {
	o.cfg, err = o.loadConfig(cmd)
	return err
}

func (o *stepOptions) Run(ctx context.Context) error {
	s := stack.New(o.cfg)
	var selected []step.Step
	for _, name := range o.steps {
		st, err := s.Step(name)
		if err != nil {
			return err
		}
		selected = append(selected, st)
	}
	if o.dryRun {
		return o.printPlans(ctx, selected)
	}
	for _, st := range selected {
		if err := st.Apply(ctx); err != nil {
			return fmt.Errorf("%s: %w", st.Name(), err)
		}
	}
	return nil
}

func newStepCmds(g *globalOptions) []*cobra.Command {
	var cmds []*cobra.Command
	for _, info := range stepInfos {
		o := &stepOptions{globalOptions: g, steps: []string{info.name}}
		c := &cobra.Command{
			Use:   info.name,
			Short: info.short,
			Long:  info.long,
			Args:  noArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := o.Complete(cmd); err != nil {
					return err
				}
				return o.Run(cmd.Context())
			},
		}
		c.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would be created or changed (objects and Google API calls) and change nothing")
		cmds = append(cmds, c)
	}
	return cmds
}

func newUpCmd(g *globalOptions) *cobra.Command {
	o := &stepOptions{globalOptions: g, steps: stack.Order}
	c := &cobra.Command{
		Use:   "up",
		Short: "Run every step in the walkthrough's order: deploy, monitor, adapter, identity, hpa",
		Long: `Run every step in the walkthrough's order (deploy, monitor, adapter, identity,
hpa). Each step is idempotent: a re-run skips work already done.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(cmd); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what every step would create or change and change nothing")
	return c
}

type cleanupOptions struct {
	*globalOptions
	dryRun       bool
	keepWorkload bool
}

func newCleanupCmd(g *globalOptions) *cobra.Command {
	o := &cleanupOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "cleanup",
		Short: "Delete what vllm-hpa created, in reverse order, and nothing else",
		Long: `Delete the stack in reverse order (hpa, identity, adapter, monitor, deploy).
Only objects carrying the ownership label app.kubernetes.io/managed-by=vllm-hpa
and this instance's label are deleted; IAM changes remove only this stack's
members; the Google service account is deleted only if vllm-hpa created it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			s := stack.New(cfg)
			order := reversed(stack.Order)
			if o.keepWorkload {
				order = order[:len(order)-1]
			}
			var steps []step.Step
			for _, name := range order {
				st, _ := s.Step(name)
				steps = append(steps, st)
			}
			if o.dryRun {
				sp := &stepOptions{globalOptions: g, cfg: cfg}
				return sp.printPlans(cmd.Context(), steps)
			}
			for _, st := range steps {
				if err := st.Delete(cmd.Context()); err != nil {
					return fmt.Errorf("%s: %w", st.Name(), err)
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would be deleted and change nothing")
	c.Flags().BoolVar(&o.keepWorkload, "keep-workload", false, "keep the vLLM Deployment, Service and Secret")
	return c
}

func newVerifyCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check everything that makes autoscaling work, one line per check",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			s := stack.New(cfg)
			for _, st := range s.Steps() {
				if _, err := st.Check(cmd.Context()); err != nil {
					return fmt.Errorf("%s: %w", st.Name(), err)
				}
			}
			return nil
		},
	}
}

func reversed(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[len(in)-1-i] = s
	}
	return out
}
