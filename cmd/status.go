package cmd

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/session"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
)

// statusJSON is status's --output json document.
type statusJSON struct {
	result
	Steps []session.StepStatus `json:"steps"`
}

type statusOptions struct {
	stackOptions
}

func newStatusCmd(g *globalOptions) *cobra.Command {
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
		RunE: runCommand(o, nil),
	}
	config.AddFlagsFor(c.Flags(), steps.ReadSettings())
	registerEnumCompletions(c, g)
	return c
}

// Validate is the stack's, for a command that only reads.
func (o *statusOptions) Validate() error { return o.stackOptions.Validate() }

// Run reads every step and prints the table.
func (o *statusOptions) Run(ctx context.Context) error {
	s, err := session.Open(ctx, o.f, o.cfg, session.Options{Purpose: session.Read, Steps: o.steps})
	if err != nil {
		return err
	}
	read := s.Status(ctx)
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
func statusError(steps []session.StepStatus) error {
	var failed []step.Result
	for _, s := range steps {
		if s.Error != "" {
			return fmt.Errorf("%s: %s", s.Step, s.Error)
		}
		for _, o := range s.Objects {
			if o.State == session.StateUnknown {
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

func printStatusTable(w0 interface{ Write([]byte) (int, error) }, steps []session.StepStatus) error {
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
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Step, "(error)", session.StateUnknown, s.Error)
		}
	}
	return w.Flush()
}
