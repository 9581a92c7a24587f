// Package grants is the record of the IAM grants a workload's identity
// relies on, kept as an annotation on its Kubernetes service account (an
// object vllm-hpa owns, so any machine can read it): each grant vllm-hpa
// made, and each one it found already in place (which cleanup leaves, as
// it is not vllm-hpa's), with when. It also tells how long ago a grant
// was made, to say whether IAM may still be propagating it. The adapter's
// KSA holds its identity's grants; the vLLM pods' KSA, the model
// bucket's.
package grants

import (
	"encoding/json"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Annotation, on a Kubernetes service account, holds the record.
const Annotation = "vllm-hpa.io/iam-grants"

// Grant is one IAM grant a workload's identity relies on.
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

// Read is the record on a KSA (nil: no record, as before vllm-hpa kept
// one).
func Read(ksa *unstructured.Unstructured) []Grant {
	if ksa == nil {
		return nil
	}
	v, ok := ksa.GetAnnotations()[Annotation]
	if !ok {
		return nil
	}
	var out []Grant
	if json.Unmarshal([]byte(v), &out) != nil {
		return nil
	}
	return out
}

// Find finds a grant in a record.
func Find(record []Grant, resource, role, member string) (Grant, bool) {
	want := Grant{Resource: resource, Role: role, Member: member}
	for _, g := range record {
		if g.same(want) {
			return g, true
		}
	}
	return Grant{}, false
}

// Note updates record with a grant this run found in place
// (changed false) or made: a grant made keeps its time; one found keeps
// what the record already said of it (vllm-hpa may have made it earlier).
func Note(record []Grant, g Grant, changed bool, now time.Time) []Grant {
	if old, ok := Find(record, g.Resource, g.Role, g.Member); ok && !changed {
		return record
	} else if ok {
		record = Forget(record, old)
	}
	g.Made, g.At = changed, now
	return append(record, g)
}

// Forget removes a grant from a record.
func Forget(record []Grant, g Grant) []Grant {
	return slices.DeleteFunc(slices.Clone(record), func(r Grant) bool { return r.same(g) })
}

// Encode is the annotation's value (nil removes it).
func Encode(record []Grant) any {
	if len(record) == 0 {
		return nil
	}
	b, _ := json.Marshal(record)
	return string(b)
}
