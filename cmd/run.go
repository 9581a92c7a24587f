package cmd

import (
	"context"

	"github.com/spf13/cobra"
)

// command is every command's options: Complete reads the configuration
// and the arguments, Validate checks every input before any client
// exists, Run does the work through the clients the factory opens.
type command interface {
	Complete(cmd *cobra.Command, args []string) error
	Validate() error
	Run(ctx context.Context) error
}

// runCommand is every command's RunE: Complete, Validate, then runF (a
// test's seam, which sees the options as Run would) or Run.
func runCommand[O command](o O, runF func(O) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := o.Complete(cmd, args); err != nil {
			return err
		}
		if err := o.Validate(); err != nil {
			return err
		}
		if runF != nil {
			return runF(o)
		}
		return o.Run(cmd.Context())
	}
}
