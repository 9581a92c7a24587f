// Package exitcode maps errors to the process exit codes vllm-hpa documents,
// so that a CI step can tell bad input from a failed check from a timeout.
package exitcode

import (
	"context"
	"errors"
)

// The documented exit codes. Keep README.md and the root command's help in
// step with this table (a test checks both).
const (
	OK           = 0   // everything asked for was done and every check passed
	Failure      = 1   // an API call or action failed
	BadInput     = 2   // invalid configuration, flag or argument; nothing was changed
	CheckFailed  = 3   // the stack is in place but a check does not pass
	Timeout      = 4   // a wait ran out of time
	Precondition = 5   // the cluster or project is not ready for the stack; nothing was changed
	Denied       = 6   // the credentials lack a permission (PERMISSION_DENIED, 403)
	Conflict     = 7   // a name or field is taken by something vllm-hpa does not own
	Interrupted  = 130 // stopped by SIGINT/SIGTERM
)

// Table lists every code with its meaning, in order, for help text and docs.
var Table = []struct {
	Code    int
	Meaning string
}{
	{OK, "success"},
	{Failure, "failure (an API call or action failed)"},
	{BadInput, "bad input (configuration, flag or argument); nothing was changed"},
	{CheckFailed, "a check failed"},
	{Timeout, "timed out waiting for a condition"},
	{Precondition, "a precondition is not met; nothing was changed"},
	{Denied, "permission denied (the credentials lack an IAM permission)"},
	{Conflict, "conflict with something vllm-hpa does not own (--force-conflicts or another name)"},
	{Interrupted, "interrupted (SIGINT/SIGTERM)"},
}

// Error carries an exit code with its cause.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Coder is an error that knows its exit code (e.g. a failed check).
type Coder interface {
	error
	ExitCode() int
}

// With wraps err so that Of reports code for it. A nil err stays nil.
func With(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Of returns the exit code for err: the code of the outermost *Error in its
// chain, Interrupted for a cancelled context, Timeout for a deadline, and
// Failure for anything else.
func Of(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var c Coder
	if errors.As(err, &c) {
		return c.ExitCode()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return Interrupted
	case errors.Is(err, context.DeadlineExceeded):
		return Timeout
	}
	return Failure
}
