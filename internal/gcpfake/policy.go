// Package gcpfake holds in-process fakes of the Google APIs vllm-hpa calls:
// the IAM admin API and the Resource Manager API as gRPC servers built from
// their generated server types, and the container API as an HTTP server.
// Each holds real state (accounts, policies whose etag changes on every
// write) and answers as GCP does: ABORTED for a stale etag, NOT_FOUND and
// PERMISSION_DENIED where GCP gives them. They count mutating calls, and can
// inject failures. They listen on loopback only.
package gcpfake

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// policyStore holds IAM policies by resource name, with etags that change
// on every write, as GCP's do.
type policyStore struct {
	mu       sync.Mutex
	policies map[string]*iampb.Policy
	// granted is when each unconditional grant (role, member) of each
	// policy was written, for IAM's propagation delay; a grant set up by a
	// test (SetPolicy) is as old as can be.
	granted map[string]map[grant]time.Time
	serial  atomic.Int64
}

// grant is one member of one role's unconditional binding.
type grant struct{ role, member string }

func newPolicyStore() *policyStore {
	return &policyStore{policies: map[string]*iampb.Policy{}, granted: map[string]map[grant]time.Time{}}
}

// grants are p's unconditional grants.
func grants(p *iampb.Policy) map[grant]bool {
	out := map[grant]bool{}
	for _, b := range p.Bindings {
		if b.Condition != nil {
			continue
		}
		for _, m := range b.Members {
			out[grant{b.Role, m}] = true
		}
	}
	return out
}

// stamp records when each grant of the policy now held for resource was
// written: a grant kept keeps its time, a new one gets at. (s.mu held)
func (s *policyStore) stamp(resource string, p *iampb.Policy, at time.Time) {
	old := s.granted[resource]
	next := map[grant]time.Time{}
	for g := range grants(p) {
		if t, ok := old[g]; ok {
			next[g] = t
		} else {
			next[g] = at
		}
	}
	s.granted[resource] = next
}

// GrantedAt is when member was granted role (unconditionally) on
// resource, and whether it holds it.
func (s *policyStore) GrantedAt(resource, role, member string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.granted[resource][grant{role, member}]
	return t, ok
}

func (s *policyStore) etag() []byte { return []byte(fmt.Sprintf("etag-%d", s.serial.Add(1))) }

// get returns the policy at the requested version. Like GCP, a policy with
// conditional bindings read at version < 3 comes back with those bindings'
// roles renamed and conditions dropped, so a client that forgets to ask for
// version 3 and writes back what it read destroys them.
func (s *policyStore) get(resource string, requestedVersion int32) *iampb.Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.policies[resource]
	if !ok {
		p = &iampb.Policy{Version: 1, Etag: s.etag()}
		s.policies[resource] = p
	}
	out := proto.Clone(p).(*iampb.Policy)
	if requestedVersion < 3 && hasConditions(out) {
		out.Version = 1
		for _, b := range out.Bindings {
			if b.Condition != nil {
				h := sha256.Sum256([]byte(b.Condition.Expression))
				b.Role = fmt.Sprintf("%s_withcond_%x", b.Role, h[:4])
				b.Condition = nil
			}
		}
	}
	return out
}

// set writes a policy guarded by its etag.
func (s *policyStore) set(resource string, p *iampb.Policy) (*iampb.Policy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.policies[resource]
	if ok && len(p.Etag) > 0 && string(p.Etag) != string(cur.Etag) {
		return nil, Plain(codes.Aborted, "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.").GRPC()
	}
	for _, b := range p.Bindings {
		if strings.Contains(b.Role, "_withcond_") {
			return nil, Plain(codes.InvalidArgument, "role %s is a version 1 rendering of a conditional binding: read the policy at version 3", b.Role).GRPC()
		}
		if b.Condition != nil && p.Version < 3 {
			return nil, Plain(codes.InvalidArgument, "a policy with conditional bindings must be version 3").GRPC()
		}
	}
	next := proto.Clone(p).(*iampb.Policy)
	// GCP drops empty bindings.
	kept := next.Bindings[:0]
	for _, b := range next.Bindings {
		if len(b.Members) > 0 {
			kept = append(kept, b)
		}
	}
	next.Bindings = kept
	next.Etag = s.etag()
	s.policies[resource] = next
	s.stamp(resource, next, time.Now())
	return proto.Clone(next).(*iampb.Policy), nil
}

// Policy returns a copy of the policy of resource (version 3).
func (s *policyStore) Policy(resource string) *iampb.Policy { return s.get(resource, 3) }

// SetPolicy replaces a policy outright (test setup).
func (s *policyStore) SetPolicy(resource string, p *iampb.Policy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := proto.Clone(p).(*iampb.Policy)
	next.Etag = s.etag()
	s.policies[resource] = next
	s.stamp(resource, next, time.Time{})
}

func hasConditions(p *iampb.Policy) bool {
	for _, b := range p.Bindings {
		if b.Condition != nil {
			return true
		}
	}
	return false
}

// Members returns the members of role's unconditional binding in p.
func Members(p *iampb.Policy, role string) []string {
	var out []string
	for _, b := range p.Bindings {
		if b.Role == role && b.Condition == nil {
			out = append(out, b.Members...)
		}
	}
	return out
}

// HasMember reports whether member holds role unconditionally in p.
func HasMember(p *iampb.Policy, role, member string) bool {
	for _, m := range Members(p, role) {
		if m == member {
			return true
		}
	}
	return false
}

// Faults decides, per call, whether to fail it; nil never fails. method is
// the RPC's short name, e.g. "SetIamPolicy".
type Faults func(method string) error

// Counters count calls by kind.
type Counters struct {
	Mutations atomic.Int64 // calls that change state (whether or not they succeed)
	Reads     atomic.Int64
	Aborted   atomic.Int64 // writes refused for a stale etag
}

// rename replaces member from with to in every policy, as IAM rewrites the
// member of a deleted service account.
func (s *policyStore) rename(from, to string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for res, p := range s.policies {
		changed := false
		for _, b := range p.Bindings {
			for i, m := range b.Members {
				if m == from {
					b.Members[i] = to
					changed = true
				}
			}
		}
		if changed {
			p.Etag = s.etag()
			s.policies[res] = p
			s.stamp(res, p, time.Now())
		}
	}
}

// delete forgets a resource's policy (its resource is gone).
func (s *policyStore) delete(resource string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.policies, resource)
	delete(s.granted, resource)
}
