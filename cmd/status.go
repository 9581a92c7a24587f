package cmd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/cmdutil"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
)

// The states an object of the stack can be in, as status reports them.
const (
	statePresent = "present" // this instance's (or a shared part it uses)
	stateShared  = "shared"  // a shared part other instances use, not this one
	stateAdopted = "adopted" // taken over with --adopt
	stateForeign = "foreign" // exists, not vllm-hpa's
	stateOther   = "other"   // another instance's
	stateAbsent  = "absent"
	stateUnknown = "unknown" // could not be read (see error)
)

// statusObject is one object of a step and whether it is there.
type statusObject struct {
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name"`
	State     string   `json:"state"`
	Users     []string `json:"users,omitempty"` // instances using a shared part
	Owner     string   `json:"owner,omitempty"` // who holds a foreign or other object
	Error     string   `json:"error,omitempty"`
}

type statusStep struct {
	Step    string         `json:"step"`
	Objects []statusObject `json:"objects"`
	Checks  []step.Result  `json:"checks"`
	Error   string         `json:"error,omitempty"`
}

// statusJSON is status's --output json document.
type statusJSON struct {
	result
	Steps []statusStep `json:"steps"`
}

type statusOptions struct {
	stackOptions
}

func newStatusCmd(g *globalOptions, runF func(*statusOptions) error) *cobra.Command {
	o := &statusOptions{stackOptions{globalOptions: g, command: "status", steps: steps.Names()}}
	c := &cobra.Command{
		Use:   "status",
		Short: "Show every step's objects and conditions in one table (read-only)",
		Long: `Read, in parallel and without changing anything, every object of every step
and every step's checks, and print them as one table (or --output json/yaml).
An object is present (this instance's, or a shared part it uses), shared
(used by other instances only), adopted, foreign (not vllm-hpa's), other
(another instance's), absent, or unknown (could not be read). Exits 0 when
everything could be read, 3 when a check fails, and 5 when the cluster
cannot be reached.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(cmd); err != nil {
				return err
			}
			if err := o.stackOptions.Validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	config.AddStepFlags(c.Flags())
	registerEnumCompletions(c)
	return c
}

// Run reads every step and prints the table.
func (o *statusOptions) Run(ctx context.Context) error {
	deps, err := o.f.Connect(ctx, o.cfg, cmdutil.Need{IAM: true, GCPOptional: true}, nil)
	if err != nil {
		return err
	}
	if err := steps.InferBackend(ctx, o.cfg, deps); err != nil {
		return err
	}
	if err := steps.ResolveBackend(ctx, o.cfg, &deps); err != nil {
		return err
	}
	read := readStatus(ctx, o.cfg, steps.New(o.cfg, deps), deps.Kube)
	runErr := statusError(read)
	if done, err := o.printDocOf(statusJSON{resultOf("status", runErr), read}, runErr); done {
		return err
	}
	if err := printStatusTable(o.streams.Out, read); err != nil {
		return err
	}
	return runErr
}

// statusError: a step that could not be read fails the command (1); a
// failed check exits 3.
func statusError(steps []statusStep) error {
	var failed []step.Result
	for _, s := range steps {
		if s.Error != "" {
			return fmt.Errorf("%s: %s", s.Step, s.Error)
		}
		for _, o := range s.Objects {
			if o.State == stateUnknown {
				return fmt.Errorf("%s: %s: %s", s.Step, objectRef(o.Kind, o.Namespace, o.Name), o.Error)
			}
		}
		for _, c := range s.Checks {
			if !c.OK {
				failed = append(failed, c)
			}
		}
	}
	if len(failed) > 0 {
		return &step.Failed{Results: failed}
	}
	return nil
}

// readStatus reads every step's objects and checks concurrently; each
// goroutine writes only its own entries.
func readStatus(ctx context.Context, cfg *config.Config, s *steps.Stack, k *kube.Client) []statusStep {
	out := make([]statusStep, len(steps.Ordered))
	var wg sync.WaitGroup
	for i, def := range steps.Ordered {
		name := def.Name()
		out[i] = statusStep{Step: name, Objects: []statusObject{}, Checks: []step.Result{}}
		st, _ := s.Step(name)
		plan, err := st.Plan(ctx)
		if err != nil {
			out[i].Error = err.Error()
			continue
		}
		out[i].Objects = make([]statusObject, len(plan.Objects))
		wg.Add(1)
		go func() { // the only writer of out[i].Checks and out[i].Error
			defer wg.Done()
			results, err := st.Check(ctx)
			out[i].Checks = append(out[i].Checks, results...)
			if err != nil {
				out[i].Error = err.Error()
			}
		}()
		shared := steps.Shared(def)
		for j, obj := range plan.Objects {
			out[i].Objects[j] = statusObject{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()}
			wg.Add(1)
			go func() {
				defer wg.Done()
				so := &out[i].Objects[j]
				live, err := k.Get(ctx, obj)
				if err != nil {
					so.State, so.Error = stateUnknown, err.Error()
					return
				}
				so.State, so.Users, so.Owner = objectState(owner.Judge(live, cfg.Instance, shared))
			}()
		}
	}
	wg.Wait()
	return out
}

// objectState names a judgement as status shows it.
func objectState(j owner.Judgement) (state string, users []string, who string) {
	switch j.Verdict {
	case owner.Absent:
		return stateAbsent, nil, ""
	case owner.Foreign:
		return stateForeign, nil, j.Owner
	case owner.Other:
		return stateOther, nil, j.Owner
	case owner.Shared:
		return stateShared, j.Users, ""
	}
	if j.Adopted {
		return stateAdopted, j.Users, ""
	}
	return statePresent, j.Users, ""
}

func printStatusTable(w0 interface{ Write([]byte) (int, error) }, steps []statusStep) error {
	w := tabwriter.NewWriter(w0, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STEP\tOBJECT OR CHECK\tSTATE\tDETAIL")
	for _, s := range steps {
		for _, obj := range s.Objects {
			detail := obj.Owner + obj.Error
			if len(obj.Users) > 0 {
				detail = "used by " + strings.Join(obj.Users, ", ")
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Step, objectRef(obj.Kind, obj.Namespace, obj.Name), obj.State, detail)
		}
		for _, c := range s.Checks {
			state := "ok"
			if !c.OK {
				state = "not ok: " + c.Reason
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Step, "check: "+c.Check, state, c.Message)
		}
		if s.Error != "" {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Step, "(error)", stateUnknown, s.Error)
		}
	}
	return w.Flush()
}
