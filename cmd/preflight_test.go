package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// preflightDoc runs preflight -o json and returns its exit code, its
// document and stderr.
func preflightDoc(t *testing.T, g *gcpfake.GCP, inst instance, extra map[string]string, args ...string) (int, runJSON, string) {
	t.Helper()
	env := g.Env()
	for k, v := range extra {
		env[k] = v
	}
	code, out, errOut := kubeRunEnv(t, inst, env, append([]string{"preflight", "-o", "json"}, args...)...)
	var doc runJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("preflight -o json: %v\n%s\n%s", err, out, errOut)
	}
	return code, doc, errOut
}

// failedChecks are the messages of doc's failed checks.
func failedChecks(doc runJSON) []string {
	var out []string
	for _, s := range doc.Steps {
		for _, c := range s.Checks {
			if !c.OK {
				out = append(out, c.Check+": "+c.Message)
			}
		}
	}
	return out
}

// TestPreflight: with every permission, preflight passes and changes
// nothing; each permission taken away in turn (IAM on the project and
// the account, Kubernetes RBAC of an impersonated user) fails it with
// exit 6 naming that permission; a missing token is exit 5.
func TestPreflight(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "pre", "pre-ns")
	ctx := context.Background()
	before := g.Mutations()
	code, doc, errOut := preflightDoc(t, g, inst, nil)
	if code != 0 || !doc.OK {
		t.Fatalf("preflight with every permission: exit %d, failed %v\n%s", code, failedChecks(doc), errOut)
	}
	if g.Mutations() != before || len(ownedObjects(t, inst)) != 0 {
		t.Errorf("preflight changed something: Google mutations %d -> %d, objects %v", before, g.Mutations(), keys(ownedObjects(t, inst)))
	}
	for _, want := range []string{"token", "kubernetes permissions", "dry run", "iam permissions"} {
		found := false
		for _, st := range doc.Steps {
			for _, c := range st.Checks {
				found = found || c.Check == want
			}
		}
		if !found {
			t.Errorf("no %q check in %+v", want, doc.Steps)
		}
	}

	t.Run("up --dry-run=server", func(t *testing.T) {
		code, out, errOut := gcpRun(t, g, inst, "up", "--dry-run=server", "-o", "json")
		var doc runJSON
		strict(t, out, &doc)
		if code != 0 || doc.Command != "up" || len(doc.Steps) == 0 || doc.Steps[len(doc.Steps)-1].Step == "hpa" {
			t.Errorf("up --dry-run=server: exit %d, %+v\n%s", code, doc, errOut)
		}
		if code, _, errOut := gcpRun(t, g, inst, "cleanup", "--dry-run=server"); code != exitcode.BadInput {
			t.Errorf("cleanup --dry-run=server: exit %d, want 2\n%s", code, errOut)
		}
	})

	t.Run("no Google credentials", func(t *testing.T) {
		// The checks that need no Google API still run and are said;
		// the IAM ones are said not checked, with how to give them.
		noCreds := func(d *step.Deps) {
			d.GCP, d.GCPError = nil, &gcp.NoCredentialsError{Err: errors.New("could not find default credentials")}
		}
		ctx := context.WithValue(context.Background(), depsEditKey{}, noCreds)
		code, out, errOut := kubeRunCtx(t, ctx, inst, g.Env(), "preflight", "-o", "json")
		var doc runJSON
		strict(t, out, &doc)
		failed := strings.Join(failedChecks(doc), "\n")
		if code != exitcode.Precondition || !strings.Contains(failed, "iam permissions: not checked:") || !strings.Contains(failed, "could not find default credentials") || !strings.Contains(out, "kubernetes permissions") {
			t.Errorf("exit %d, failed:\n%s\n%s\n%s", code, failed, out, errOut)
		}
	})

	// Objects up would stop at (exit 7), each said by preflight: one
	// someone else made with our very name and values (no label of
	// ours), one another instance made, and one given with --adopt.
	t.Run("objects that are not this instance's", func(t *testing.T) {
		admin := inst.tb.cp.Client
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: inst.namespace}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var ours *unstructured.Unstructured
		objs, err := render.Objects(inst.config(), "deploy", false)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if o.GetKind() == "Service" {
				ours = o
			}
		}
		for _, c := range []struct {
			name   string
			labels map[string]string
			args   []string
			code   int
			want   string
		}{
			{"same name and values, no label of ours", nil, nil, exitcode.Precondition, "exists and is not vllm-hpa's"},
			{"another instance's", map[string]string{owner.ManagedByLabel: owner.ManagedByValue, owner.InstanceLabel: "someone-else"}, nil, exitcode.Precondition, "exists and is vllm-hpa instance someone-else's"},
			{"foreign, with --adopt", nil, []string{"--adopt"}, 0, ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				svc := ours.DeepCopy()
				svc.SetLabels(c.labels)
				if _, err := inst.tb.cp.Dynamic.Resource(corev1.SchemeGroupVersion.WithResource("services")).Namespace(inst.namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				defer admin.CoreV1().Services(inst.namespace).Delete(ctx, svc.GetName(), metav1.DeleteOptions{})
				code, doc, errOut := preflightDoc(t, g, inst, nil, c.args...)
				failed := strings.Join(failedChecks(doc), "\n")
				named := strings.Contains(failed, "Service "+inst.namespace+"/llm-service: "+c.want)
				if code != c.code || (c.want == "") != (failed == "") || c.want != "" && !named {
					t.Errorf("exit %d, failed:\n%s\n%s\nwant %d naming the Service: %q", code, failed, errOut, c.code, c.want)
				}
			})
		}
	})

	t.Run("no token", func(t *testing.T) {
		code, doc, _ := preflightDoc(t, g, inst, map[string]string{"HF_TOKEN": ""})
		if code != exitcode.Precondition || !strings.Contains(strings.Join(failedChecks(doc), "\n"), "token: no Hugging Face token") {
			t.Errorf("exit %d, failed %v: want 5 naming the token", code, failedChecks(doc))
		}
	})

	for _, c := range []struct {
		name, permission string
		deny             func()
	}{
		{"project setIamPolicy", "resourcemanager.projects.setIamPolicy", func() {
			g.Projects.Denied = func(method, _ string) bool { return method == "SetIamPolicy" }
		}},
		{"account create", "iam.serviceAccounts.create", func() {
			g.IAM.Denied = func(method, _ string) bool { return method == "CreateServiceAccount" }
		}},
		{"account setIamPolicy", "iam.serviceAccounts.setIamPolicy", func() {
			g.IAM.Denied = func(method, _ string) bool { return method == "SetIamPolicy" }
		}},
	} {
		t.Run("iam "+c.name, func(t *testing.T) {
			c.deny()
			defer func() { g.Projects.Denied, g.IAM.Denied = nil, nil }()
			code, doc, _ := preflightDoc(t, g, inst, nil)
			if failed := strings.Join(failedChecks(doc), "\n"); code != exitcode.Denied || !strings.Contains(failed, c.permission) {
				t.Errorf("exit %d, failed:\n%s\nwant 6 naming %s", code, failed, c.permission)
			}
		})
	}

	// Kubernetes: a user granted exactly what preflight asks for, less
	// one permission at a time.
	admin := inst.tb.cp.Client
	const user = "preflight-user"
	full := preflightRole(t, g, inst)
	for _, drop := range []struct{ verb, resource string }{
		{"", ""}, // the whole role: it passes, so each failure below is its permission's
		{"patch", "deployments"},
		{"create", "pods/portforward"},
		{"delete", "apiservices"},
		{"patch", "horizontalpodautoscalers"},
	} {
		t.Run("rbac without "+drop.verb+" "+drop.resource, func(t *testing.T) {
			role := full.DeepCopy()
			role.Name = "preflight-" + strings.ReplaceAll(drop.verb+"-"+drop.resource, "/", "-")
			if drop.verb != "" {
				role.Rules = withoutRule(role.Rules, drop.verb, drop.resource)
			}
			if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
				RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
				Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user + "-" + role.Name}}}
			if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				admin.RbacV1().ClusterRoleBindings().Delete(ctx, role.Name, metav1.DeleteOptions{})
				admin.RbacV1().ClusterRoles().Delete(ctx, role.Name, metav1.DeleteOptions{})
			})
			kc := impersonating(t, inst, user+"-"+role.Name)
			code, doc, errOut := preflightDoc(t, g, inst, map[string]string{"VLLM_HPA_KUBE_KUBECONFIG": kc})
			failed := strings.Join(failedChecks(doc), "\n")
			if drop.verb == "" {
				if code != 0 {
					t.Fatalf("the whole role: exit %d, failed:\n%s\n%s", code, failed, errOut)
				}
				return
			}
			if code != exitcode.Denied || !strings.Contains(failed, "you may not "+drop.verb+" "+strings.Split(drop.resource, "/")[0]) {
				t.Errorf("exit %d, failed:\n%s\n%s\nwant 6 naming %s %s", code, failed, errOut, drop.verb, drop.resource)
			}
		})
	}
}

// preflightRole is a ClusterRole granting every access preflight asks
// about (read from a passing run's permissions), and what the dry runs
// and RBAC escalation need: the rules of the roles the adapter binds.
func preflightRole(t *testing.T, g *gcpfake.GCP, inst instance) *rbacv1.ClusterRole {
	t.Helper()
	return &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "preflight-full"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "pods/log", "pods/proxy", "pods/portforward", "events", "secrets", "services", "serviceaccounts", "namespaces", "configmaps", "endpoints", "nodes"}, Verbs: allVerbs},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: allVerbs},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: allVerbs},
			{APIGroups: []string{"monitoring.googleapis.com"}, Resources: []string{"*"}, Verbs: allVerbs},
			{APIGroups: []string{"autoscaling.gke.io"}, Resources: []string{"*"}, Verbs: allVerbs},
			{APIGroups: []string{"autoscaling"}, Resources: []string{"horizontalpodautoscalers"}, Verbs: allVerbs},
			{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles", "clusterrolebindings", "roles", "rolebindings"}, Verbs: append(allVerbs, "bind", "escalate")},
			{APIGroups: []string{"apiregistration.k8s.io"}, Resources: []string{"apiservices"}, Verbs: allVerbs},
			{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: allVerbs},
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: allVerbs},
			{APIGroups: []string{"custom.metrics.k8s.io", "external.metrics.k8s.io"}, Resources: []string{"*"}, Verbs: allVerbs},
			{NonResourceURLs: []string{"*"}, Verbs: []string{"get"}},
		},
	}
}

var allVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete"}

// withoutRule is rules with verb taken away from resource.
func withoutRule(rules []rbacv1.PolicyRule, verb, resource string) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		has := false
		for _, res := range r.Resources {
			has = has || res == resource
		}
		if !has {
			out = append(out, r)
			continue
		}
		var rest []string
		for _, res := range r.Resources {
			if res != resource {
				rest = append(rest, res)
			}
		}
		if len(rest) > 0 {
			out = append(out, rbacv1.PolicyRule{APIGroups: r.APIGroups, Resources: rest, Verbs: r.Verbs})
		}
		var verbs []string
		for _, v := range r.Verbs {
			if v != verb {
				verbs = append(verbs, v)
			}
		}
		out = append(out, rbacv1.PolicyRule{APIGroups: r.APIGroups, Resources: []string{resource}, Verbs: verbs})
	}
	return out
}

// impersonating is a copy of the testbed's kubeconfig whose user acts as
// user (the admin's credentials, impersonating: RBAC judges user).
func impersonating(t *testing.T, inst instance, user string) string {
	t.Helper()
	b, err := os.ReadFile(inst.tb.cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	var kc map[string]any
	if err := yaml.Unmarshal(b, &kc); err != nil {
		t.Fatal(err)
	}
	for _, u := range kc["users"].([]any) {
		u.(map[string]any)["user"].(map[string]any)["as"] = user
	}
	out, err := yaml.Marshal(kc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
