package identity

import (
	"encoding/json"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/steps/adapter"
)

// GrantsAnnotation, on the adapter's Kubernetes service account (an object
// vllm-hpa owns, so any machine can read it), records the IAM grants the
// adapter's identity relies on: each one vllm-hpa made, and each one it
// found already in place (which cleanup leaves, as it is not vllm-hpa's),
// with when. It also tells how long ago a grant was made, to say whether
// IAM may still be propagating it.
const GrantsAnnotation = adapter.GrantsAnnotation

// Grant is one IAM grant of the adapter's identity.
type Grant struct {
	Resource string `json:"resource"` // e.g. projects/my-proj
	Role     string `json:"role"`
	Member   string `json:"member"`
	// Made: vllm-hpa granted it; false: it was there when vllm-hpa looked.
	Made bool `json:"made"`
	// At is when vllm-hpa made it, or first found it.
	At time.Time `json:"at"`
}

func (g Grant) same(o Grant) bool {
	return g.Resource == o.Resource && g.Role == o.Role && g.Member == o.Member
}

// Grants are the grants recorded on the adapter's KSA (nil: no record,
// as before vllm-hpa kept one).
func Grants(ksa *unstructured.Unstructured) []Grant {
	if ksa == nil {
		return nil
	}
	v, ok := ksa.GetAnnotations()[GrantsAnnotation]
	if !ok {
		return nil
	}
	var out []Grant
	if json.Unmarshal([]byte(v), &out) != nil {
		return nil
	}
	return out
}

// Recorded finds a grant in a record.
func Recorded(record []Grant, resource, role, member string) (Grant, bool) {
	want := Grant{Resource: resource, Role: role, Member: member}
	for _, g := range record {
		if g.same(want) {
			return g, true
		}
	}
	return Grant{}, false
}

// noteGrant updates record with a grant this run found in place
// (changed false) or made: a grant made keeps its time; one found keeps
// what the record already said of it (vllm-hpa may have made it earlier).
func noteGrant(record []Grant, g Grant, changed bool, now time.Time) []Grant {
	if old, ok := Recorded(record, g.Resource, g.Role, g.Member); ok && !changed {
		return record
	} else if ok {
		record = forget(record, old)
	}
	g.Made, g.At = changed, now
	return append(record, g)
}

// forget removes a grant from a record.
func forget(record []Grant, g Grant) []Grant {
	return slices.DeleteFunc(slices.Clone(record), func(r Grant) bool { return r.same(g) })
}

// encodeGrants is the annotation's value (nil removes it).
func encodeGrants(record []Grant) any {
	if len(record) == 0 {
		return nil
	}
	b, _ := json.Marshal(record)
	return string(b)
}
