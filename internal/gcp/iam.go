package gcp

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"cloud.google.com/go/iam"
	admin "cloud.google.com/go/iam/admin/apiv1"
	"cloud.google.com/go/iam/apiv1/iampb"
	resourcemanager "cloud.google.com/go/resourcemanager/apiv3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
)

// PolicyVersion is requested on every read so that conditional bindings
// come back intact (and so survive the write that follows).
const PolicyVersion = 3

// Policy reads and writes one resource's IAM policy.
type Policy interface {
	Resource() string
	Get(ctx context.Context) (*iampb.Policy, error)
	// Set writes p, guarded by p.Etag: a stale etag fails with ABORTED.
	Set(ctx context.Context, p *iampb.Policy) (*iampb.Policy, error)
}

// ProjectPolicy is a project's IAM policy, through Resource Manager.
func ProjectPolicy(c *resourcemanager.ProjectsClient, project string) Policy {
	return &projectPolicy{c: c, resource: "projects/" + project}
}

type projectPolicy struct {
	c        *resourcemanager.ProjectsClient
	resource string
}

func (p *projectPolicy) Resource() string { return p.resource }
func (p *projectPolicy) Get(ctx context.Context) (*iampb.Policy, error) {
	return p.c.GetIamPolicy(ctx, &iampb.GetIamPolicyRequest{Resource: p.resource, Options: &iampb.GetPolicyOptions{RequestedPolicyVersion: PolicyVersion}})
}
func (p *projectPolicy) Set(ctx context.Context, pol *iampb.Policy) (*iampb.Policy, error) {
	return p.c.SetIamPolicy(ctx, &iampb.SetIamPolicyRequest{Resource: p.resource, Policy: pol})
}

// AccountPolicy is a service account's IAM policy, through the IAM admin API.
func AccountPolicy(c *admin.IamClient, project, email string) Policy {
	return &accountPolicy{c: c, resource: "projects/" + project + "/serviceAccounts/" + email}
}

type accountPolicy struct {
	c        *admin.IamClient
	resource string
}

func (p *accountPolicy) Resource() string { return p.resource }
func (p *accountPolicy) Get(ctx context.Context) (*iampb.Policy, error) {
	pol, err := p.c.GetIamPolicy(ctx, &iampb.GetIamPolicyRequest{Resource: p.resource, Options: &iampb.GetPolicyOptions{RequestedPolicyVersion: PolicyVersion}})
	if err != nil {
		return nil, err
	}
	return pol.InternalProto, nil
}
func (p *accountPolicy) Set(ctx context.Context, pol *iampb.Policy) (*iampb.Policy, error) {
	out, err := p.c.SetIamPolicy(ctx, &admin.SetIamPolicyRequest{Resource: p.resource, Policy: &iam.Policy{InternalProto: pol}})
	if err != nil {
		return nil, err
	}
	return out.InternalProto, nil
}

// RMWStats counts one read-modify-write's calls.
type RMWStats struct {
	Reads, Writes, Retries int
}

// Backoff is the retry schedule of a read-modify-write cycle refused for a
// stale etag (or a transient error): exponential with full jitter.
type Backoff struct {
	Initial, Max time.Duration
	Attempts     int
}

// DefaultBackoff retries for about a minute at most: on a busy shared
// policy most cycles can lose the race, and each retry is cheap.
var DefaultBackoff = Backoff{Initial: 20 * time.Millisecond, Max: time.Second, Attempts: 100}

func (b Backoff) delay(attempt int) time.Duration {
	d := b.Initial << attempt
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// retryable: a stale etag (ABORTED; 409 over REST) or a transient failure.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Aborted, codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// SetMember makes member hold role (present) or not (absent) in p's
// unconditional binding for role, by an etag-guarded read-modify-write of
// the whole policy, retried from the read when the write is refused for a
// stale etag. Every other binding, member and condition is written back as
// read. It writes nothing when the policy already is as asked.
func SetMember(ctx context.Context, p Policy, role, member string, present bool, b Backoff) (changed bool, stats RMWStats, err error) {
	return Update(ctx, p, func(pol *iampb.Policy) bool {
		if present {
			return addMember(pol, role, member)
		}
		return removeMembers(pol, role, func(m string) bool { return m == member })
	}, b)
}

// RemoveMembers removes from role's unconditional binding every member
// match accepts, by the same read-modify-write as SetMember.
func RemoveMembers(ctx context.Context, p Policy, role string, match func(member string) bool, b Backoff) (changed bool, stats RMWStats, err error) {
	return Update(ctx, p, func(pol *iampb.Policy) bool { return removeMembers(pol, role, match) }, b)
}

// Update changes p by an etag-guarded read-modify-write: modify changes the
// policy read and says whether it changed anything (nothing is written
// when it did not); a write refused for a stale etag starts again from the
// read.
func Update(ctx context.Context, p Policy, modify func(*iampb.Policy) bool, b Backoff) (changed bool, stats RMWStats, err error) {
	for attempt := 0; ; attempt++ {
		var pol *iampb.Policy
		pol, err = p.Get(ctx)
		stats.Reads++
		if err == nil {
			if !modify(pol) {
				return false, stats, nil
			}
			// Version 3 is required once any binding has a condition and
			// harmless otherwise; the etag read above guards the write.
			pol.Version = PolicyVersion
			_, err = p.Set(ctx, pol)
			stats.Writes++
			if err == nil {
				return true, stats, nil
			}
		}
		if !retryable(err) || attempt+1 >= b.Attempts {
			return false, stats, err
		}
		stats.Retries++
		select {
		case <-ctx.Done():
			return false, stats, ctx.Err()
		case <-time.After(b.delay(attempt)):
		}
	}
}

// HasMember reports whether member holds role unconditionally.
func HasMember(pol *iampb.Policy, role, member string) bool {
	for _, b := range pol.Bindings {
		if b.Role == role && b.Condition == nil {
			for _, m := range b.Members {
				if m == member {
					return true
				}
			}
		}
	}
	return false
}

func addMember(pol *iampb.Policy, role, member string) bool {
	if HasMember(pol, role, member) {
		return false
	}
	for _, b := range pol.Bindings {
		if b.Role == role && b.Condition == nil {
			b.Members = append(b.Members, member)
			return true
		}
	}
	pol.Bindings = append(pol.Bindings, &iampb.Binding{Role: role, Members: []string{member}})
	return true
}

func removeMembers(pol *iampb.Policy, role string, match func(string) bool) bool {
	changed := false
	kept := pol.Bindings[:0]
	for _, b := range pol.Bindings {
		if b.Role == role && b.Condition == nil {
			members := b.Members[:0]
			for _, m := range b.Members {
				if match(m) {
					changed = true
					continue
				}
				members = append(members, m)
			}
			b.Members = members
			if len(b.Members) == 0 {
				continue // an empty binding is dropped, as GCP would
			}
		}
		kept = append(kept, b)
	}
	pol.Bindings = kept
	return changed
}

func (s RMWStats) String() string {
	plural := func(n int, one string) string {
		if n == 1 {
			return "1 " + one
		}
		if one == "retry" {
			return fmt.Sprintf("%d retries", n)
		}
		return fmt.Sprintf("%d %ss", n, one)
	}
	return plural(s.Writes, "write") + ", " + plural(s.Retries, "retry")
}

// Retry runs call until it succeeds or fails for good: UNAVAILABLE,
// ABORTED and DEADLINE_EXCEEDED are retried with b's backoff. It returns
// how many retries it took.
func Retry(ctx context.Context, b Backoff, call func(context.Context) error) (int, error) {
	for attempt := 0; ; attempt++ {
		err := call(ctx)
		if err == nil || !retryable(err) || attempt+1 >= b.Attempts {
			return attempt, err
		}
		select {
		case <-ctx.Done():
			return attempt, ctx.Err()
		case <-time.After(b.delay(attempt)):
		}
	}
}

// NewResourceWindow is how long IAM may take to see a service account
// that was just created: Google documents up to about 60 s, during which
// reads answer NOT_FOUND or PERMISSION_DENIED and a policy naming the
// account as a member is refused as INVALID_ARGUMENT "does not exist".
var NewResourceWindow = 90 * time.Second

// MemberNotYetVisible reports whether err is how IAM refuses a policy that
// names a service account it does not see yet: INVALID_ARGUMENT "Service
// account ... does not exist". Only that is retried for a policy the new
// account is merely a member of (the project's): a PERMISSION_DENIED there
// is the caller's own and waiting will not cure it.
func MemberNotYetVisible(err error) bool {
	msg := strings.ToLower(status.Convert(err).Message())
	return status.Code(err) == codes.InvalidArgument &&
		strings.Contains(msg, "service account") && strings.Contains(msg, "does not exist")
}

// AccountNotYetVisible reports whether err is how IAM answers about a new
// service account itself (a read of it or of its own policy) before it
// sees it: NOT_FOUND or PERMISSION_DENIED, or a policy naming it refused.
func AccountNotYetVisible(err error) bool {
	switch status.Code(err) {
	case codes.NotFound, codes.PermissionDenied:
		return true
	}
	return MemberNotYetVisible(err)
}

// WhileNew runs call until it succeeds, fails otherwise than notYetVisible
// says IAM does for a resource it does not see yet, or NewResourceWindow
// passes; waiting(msg), if given, hears why it waits.
func WhileNew(ctx context.Context, waiting func(string), what string, notYetVisible func(error) bool, call func(context.Context) error) error {
	deadline := time.Now().Add(NewResourceWindow)
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := call(ctx)
		if err == nil || !notYetVisible(err) {
			return err
		}
		if time.Now().After(deadline) {
			return exitcode.With(exitcode.Timeout, fmt.Errorf("IAM still does not see %s after %s (Google documents up to about a minute, rarely more): re-run to carry on; its last answer: %w", what, NewResourceWindow, err))
		}
		if waiting != nil {
			waiting(fmt.Sprintf("IAM does not see %s yet (a new service account takes up to a minute to propagate; attempt %d: %s)", what, attempt, status.Code(err)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if delay *= 2; delay > 5*time.Second {
			delay = 5 * time.Second
		}
	}
}
