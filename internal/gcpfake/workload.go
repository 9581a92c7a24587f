package gcpfake

import (
	"fmt"
	"time"
)

// Workload is a Kubernetes workload on a GKE cluster with Workload
// Identity Federation for GKE, as the GKE metadata server sees it: its
// Kubernetes service account and that account's
// iam.gke.io/gcp-service-account annotation when its pod started.
type Workload struct {
	Project, Namespace, KSA string
	// Annotation is the Google service account the KSA's annotation names
	// ("": none, so the workload acts as its KSA's own principal).
	Annotation string
}

// roles are the permissions of the predefined roles a workload's grants
// use here.
var roles = map[string][]string{
	"roles/monitoring.viewer": {"monitoring.metricDescriptors.get", "monitoring.metricDescriptors.list", "monitoring.timeSeries.list"},
	"roles/viewer":            {"monitoring.metricDescriptors.get", "monitoring.metricDescriptors.list", "monitoring.timeSeries.list"},
	"roles/editor":            {"monitoring.metricDescriptors.get", "monitoring.metricDescriptors.list", "monitoring.timeSeries.list"},
	"roles/owner":             {"monitoring.metricDescriptors.get", "monitoring.metricDescriptors.list", "monitoring.timeSeries.list"},
}

// TokenError is why the GKE metadata server gives a workload no token, in
// the words it uses.
type TokenError struct{ Reason string }

func (e *TokenError) Error() string {
	return "compute: Received 403 `Unable to generate access token; IAM returned 403 Forbidden: " + e.Reason + "\nThis error could be caused by a missing IAM policy binding on the target IAM service account.\nFor more information, refer to the Workload Identity documentation:\n\thttps://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity#authenticating_to`"
}

// effective reports whether member's grant of role on resource (from
// store) holds and has propagated by now.
func (g *GCP) effective(store *policyStore, resource, role, member string, now time.Time) bool {
	at, ok := store.GrantedAt(resource, role, member)
	return ok && now.Sub(at) >= g.current().IAMPropagation
}

// Authenticate is what the GKE metadata server gives the workload: the IAM
// member it acts as, or why it gets no token. Without an annotation that
// is its KSA's principal in the project's pool; with one, the Google
// service account it names, which must exist, be enabled and let the
// KSA's pool identity act as it (roles/iam.workloadIdentityUser), that
// grant propagated.
func (g *GCP) Authenticate(w Workload, now time.Time) (string, error) {
	p, ok := g.Projects.byIDOrNumber(w.Project)
	if !ok || !g.hasPool(p.ID) {
		return "", &TokenError{Reason: "the Workload Identity pool " + w.Project + ".svc.id.goog does not exist"}
	}
	if w.Annotation == "" {
		return fmt.Sprintf("principal://iam.googleapis.com/projects/%s/locations/global/workloadIdentityPools/%s.svc.id.goog/subject/ns/%s/sa/%s", p.Number, p.ID, w.Namespace, w.KSA), nil
	}
	a := g.IAM.Account(w.Annotation)
	switch {
	case a == nil:
		return "", &TokenError{Reason: "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."}
	case a.Disabled:
		return "", &TokenError{Reason: "The service account " + w.Annotation + " is disabled."}
	}
	ksa := fmt.Sprintf("serviceAccount:%s.svc.id.goog[%s/%s]", p.ID, w.Namespace, w.KSA)
	if !g.effective(g.IAM.policies, w.Annotation, "roles/iam.workloadIdentityUser", ksa, now) {
		return "", &TokenError{Reason: "The caller does not have permission"}
	}
	return "serviceAccount:" + w.Annotation, nil
}

// Allowed says why member may not use permission on project's Cloud
// Monitoring, in the words Cloud Monitoring uses (nil: it may): the API
// must be enabled and a project role that holds the permission granted to
// member, that grant propagated.
func (g *GCP) Allowed(project, member, permission string, now time.Time) error {
	p, ok := g.Projects.byIDOrNumber(project)
	if !ok {
		return fmt.Errorf("googleapi: Error 403: Permission %s denied (or the resource may not exist)., forbidden", permission)
	}
	// What Google answers before it looks at the call: the API off, a
	// perimeter, a rate limit.
	if e := g.gate("monitoring.googleapis.com", p.ID); e != nil {
		return fmt.Errorf("googleapi: Error %d: %s", e.HTTP, e.Message)
	}
	for role, perms := range roles {
		for _, perm := range perms {
			if perm == permission && g.effective(g.Projects.policies, p.ID, role, member, now) {
				return nil
			}
		}
	}
	return fmt.Errorf("googleapi: Error 403: Permission %s denied (or the resource may not exist)., forbidden", permission)
}

// GrantedAt is when member was granted role on the project's policy (and
// whether it holds it).
func (f *Projects) GrantedAt(project, role, member string) (time.Time, bool) {
	return f.policies.GrantedAt(project, role, member)
}

// GrantedAt is when member was granted role on the account's policy.
func (f *IAM) GrantedAt(email, role, member string) (time.Time, bool) {
	return f.policies.GrantedAt(email, role, member)
}
