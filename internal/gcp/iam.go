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

// Backoff is the retry schedule of a call Google refused for a reason
// that may pass (Retryable): exponential with full jitter, never sooner
// than the RetryInfo delay Google asks for, and within a budget of
// attempts and of time.
type Backoff struct {
	Initial, Max time.Duration
	Attempts     int
	// Budget bounds the time from the first attempt to the last (0: no
	// bound but Attempts).
	Budget time.Duration
	// PerAttempt bounds each attempt (0: the call's own bound), so that a
	// service that accepts and never answers costs one attempt's time.
	PerAttempt time.Duration
}

// DefaultBackoff retries quick refusals many times (on a busy shared
// policy most cycles can lose the race, and each retry is cheap), gives
// each attempt 30 s, and stops two minutes after the first attempt,
// whatever delay Google asks for.
var DefaultBackoff = Backoff{Initial: 20 * time.Millisecond, Max: time.Second, Attempts: 100, Budget: 2 * time.Minute, PerAttempt: 30 * time.Second}

func (b Backoff) delay(attempt int) time.Duration {
	d := b.Initial << attempt
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// retrier counts one call's attempts from its start.
type retrier struct {
	b     Backoff
	start time.Time
}

func newRetrier(b Backoff) *retrier { return &retrier{b: b, start: time.Now()} }

// attempt runs one attempt of call, within the attempt's bound.
func (r *retrier) attempt(ctx context.Context, call func(context.Context) error) error {
	if r.b.PerAttempt <= 0 {
		return call(ctx)
	}
	actx, cancel := context.WithTimeout(ctx, r.b.PerAttempt)
	defer cancel()
	return call(actx)
}

// again waits before attempt+1 of a call that failed with err, and
// reports whether to make it: err must be Retryable, and the attempts and
// the budget not spent. A stale etag is routine; anything else Google
// refused is said through ctx's notice.
func (r *retrier) again(ctx context.Context, attempt int, err error) (bool, error) {
	if !Retryable(err) || attempt+1 >= r.b.Attempts {
		return false, nil
	}
	d := r.b.delay(attempt)
	det, _ := DetailsOf(err)
	if det.RetryDelay > d {
		d = det.RetryDelay
	}
	if r.b.Budget > 0 && time.Since(r.start)+d > r.b.Budget {
		return false, nil
	}
	if det.Code != codes.Aborted {
		why := det.Code.String()
		if det.Reason != "" {
			why += " " + det.Reason
		}
		if m := det.Metadata["quota_metric"]; m != "" {
			why += " (" + m + ")"
		}
		say(ctx, fmt.Sprintf("Google answered %s: retrying in %s (attempt %d)", why, d.Round(10*time.Millisecond), attempt+2))
	}
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-time.After(d):
	}
	return true, nil
}

type noticeKey struct{}

// WithNotice makes the Google calls made with ctx say, through notice, why
// they wait before a retry (a quota, a busy service).
func WithNotice(ctx context.Context, notice func(string)) context.Context {
	return context.WithValue(ctx, noticeKey{}, notice)
}

func say(ctx context.Context, msg string) {
	if n, ok := ctx.Value(noticeKey{}).(func(string)); ok && n != nil {
		n(msg)
	}
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
	r := newRetrier(b)
	// A write that failed for another reason than a stale etag (a 5xx, a
	// timeout) may have been applied all the same: if the next read finds
	// nothing left to change, that write made the change.
	uncertain := false
	for attempt := 0; ; attempt++ {
		var pol *iampb.Policy
		err = r.attempt(ctx, func(ctx context.Context) (err error) {
			pol, err = p.Get(ctx)
			return err
		})
		stats.Reads++
		if err == nil {
			before, _ := policySize(pol)
			if !modify(pol) {
				return uncertain, stats, nil
			}
			// A change that adds a member is checked against Google's
			// limits before the write (one that removes never is).
			if n, g := policySize(pol); n > before && (n > MaxPolicyPrincipals || g > MaxPolicyGroups) {
				return false, stats, &PolicyFullError{Resource: p.Resource(), Principals: n, Groups: g}
			}
			// Version 3 is required once any binding has a condition and
			// harmless otherwise; the etag read above guards the write.
			pol.Version = PolicyVersion
			err = r.attempt(ctx, func(ctx context.Context) error {
				_, err := p.Set(ctx, pol)
				return err
			})
			stats.Writes++
			if err == nil {
				return true, stats, nil
			}
			if d, ok := DetailsOf(err); !ok || d.Code != codes.Aborted {
				uncertain = true
			}
		}
		retry, werr := r.again(ctx, attempt, err)
		if werr != nil {
			return false, stats, werr
		}
		if !retry {
			return false, stats, err
		}
		stats.Retries++
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

// Retry runs call until it succeeds or fails for good: what Retryable
// accepts is retried with b's backoff, for as long as Google asks. It
// returns how many retries it took.
func Retry(ctx context.Context, b Backoff, call func(context.Context) error) (int, error) {
	r := newRetrier(b)
	for attempt := 0; ; attempt++ {
		err := r.attempt(ctx, call)
		if err == nil {
			return attempt, nil
		}
		retry, werr := r.again(ctx, attempt, err)
		if werr != nil {
			return attempt, werr
		}
		if !retry {
			return attempt, err
		}
	}
}

// NewResourceWindow is how long IAM may take to see a service account
// that was just created: Google documents up to about 60 s, during which
// reads answer NOT_FOUND or PERMISSION_DENIED and a policy naming the
// account as a member is refused as INVALID_ARGUMENT "does not exist".
var NewResourceWindow = 90 * time.Second

// MemberNotYetVisible reports whether err is how IAM refuses a policy that
// names, as the one member the write adds, a service account it does not
// see yet: INVALID_ARGUMENT (its message says the account "does not
// exist"; Google attaches no ErrorInfo, so the code and the member the
// caller added decide, not the text). The policy's size is checked before
// any write (see PolicyFullError), so it is not why. A PERMISSION_DENIED
// there is the caller's own and waiting will not cure it.
func MemberNotYetVisible(err error) bool {
	d, ok := DetailsOf(err)
	return ok && d.Code == codes.InvalidArgument
}

// AccountNotYetVisible reports whether err is how IAM answers about a new
// service account itself (a read or write of it or of its own policy)
// before it sees it: NOT_FOUND, or a PERMISSION_DENIED that is IAM's own
// (no reason, or IAM_PERMISSION_DENIED) and no API off, perimeter or
// constraint, which waiting would not cure.
func AccountNotYetVisible(err error) bool {
	d, ok := DetailsOf(err)
	switch {
	case !ok:
		return false
	case d.Code == codes.NotFound:
		return true
	}
	return d.Code == codes.PermissionDenied && (d.Reason == "" || d.Reason == ReasonIAMPermissionDenied) && len(d.Violations) == 0
}

// Google's limits on one IAM policy: every occurrence of a principal in
// its bindings counts (the same member in two roles counts twice), Google
// groups also on their own.
const (
	MaxPolicyPrincipals = 1500
	MaxPolicyGroups     = 250
)

// PolicyFullError is a change that would take a policy past Google's
// limits: refused before it is written.
type PolicyFullError struct {
	Resource           string
	Principals, Groups int
}

func (e *PolicyFullError) Error() string {
	return fmt.Sprintf("the IAM policy of %s is full: it would hold %d principals (Google allows %d, each occurrence counted) and %d groups (Google allows %d); remove members that are no longer used, or grant to groups, then re-run",
		e.Resource, e.Principals, MaxPolicyPrincipals, e.Groups, MaxPolicyGroups)
}

// ExitCode: a full policy is the project's state, not the caller's input.
func (e *PolicyFullError) ExitCode() int { return exitcode.Precondition }

// policySize counts a policy's principals as Google does.
func policySize(pol *iampb.Policy) (principals, groups int) {
	for _, b := range pol.Bindings {
		for _, m := range b.Members {
			principals++
			if strings.HasPrefix(m, "group:") {
				groups++
			}
		}
	}
	return principals, groups
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
