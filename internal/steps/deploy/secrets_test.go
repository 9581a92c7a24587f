package deploy

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
)

// The Secret keys the container reads: the token's first, then each
// required reference of the live container (not an optional one, not the
// token's twice, not another container's).
func TestSecretRefs(t *testing.T) {
	cfg := config.Default()
	ref := func(env, name, key string, optional bool) corev1.EnvVar {
		return corev1.EnvVar{Name: env, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key, Optional: &optional}}}
	}
	d := &appsv1.Deployment{}
	d.Spec.Template.Spec.Containers = []corev1.Container{
		{Name: cfg.Workload.Container, Env: []corev1.EnvVar{
			ref(cfg.HFToken.EnvName, cfg.HFToken.SecretName, cfg.HFToken.SecretKey, false),
			ref("API_KEY", "api", "key", false),
			ref("MAYBE", "maybe", "key", true),
			{Name: "PLAIN", Value: "x"},
		}},
		{Name: "sidecar", Env: []corev1.EnvVar{ref("OTHER", "other", "key", false)}},
	}
	var got []string
	for _, r := range secretRefs(&cfg, d) {
		got = append(got, r.Env+"="+r.Name+"/"+r.Key)
	}
	want := cfg.HFToken.EnvName + "=" + cfg.HFToken.SecretName + "/" + cfg.HFToken.SecretKey + " API_KEY=api/key"
	if strings.Join(got, " ") != want {
		t.Errorf("refs %v, want %s", got, want)
	}
	if n := len(secretRefs(&cfg, nil)); n != 1 {
		t.Errorf("no live Deployment: %d refs, want the token's alone", n)
	}
}

// JudgeSecrets: each read is judged alone; the token's must hold the
// token, the others only exist. The value is never in a message.
func TestJudgeSecrets(t *testing.T) {
	cfg := config.Default()
	cfg.SetHFToken("hf_theGivenToken")
	gr := schema.GroupResource{Resource: "secrets"}
	token := func(value string, hasKey bool) SecretRead {
		return SecretRead{Name: cfg.HFToken.SecretName, Key: cfg.HFToken.SecretKey, Env: cfg.HFToken.EnvName, Token: true, Value: []byte(value), HasKey: hasKey}
	}
	other := SecretRead{Name: "api", Key: "key", Env: "API_KEY", Value: []byte("v"), HasKey: true}
	cases := []struct {
		name   string
		reads  []SecretRead
		ok     []bool
		reason []string
	}{
		{"the given token", []SecretRead{token("hf_theGivenToken", true)}, []bool{true}, []string{""}},
		{"absent", []SecretRead{{Name: "hf-secret", Key: "hf_api_token", Token: true, Err: apierrors.NewNotFound(gr, "hf-secret")}}, []bool{false}, []string{"NotFound"}},
		{"not readable", []SecretRead{{Name: "hf-secret", Token: true, Err: apierrors.NewForbidden(gr, "hf-secret", nil)}}, []bool{false}, []string{"Forbidden"}},
		{"key missing", []SecretRead{token("", false)}, []bool{false}, []string{"KeyMissing"}},
		{"a rendered placeholder", []SecretRead{token("<your-token>", true)}, []bool{false}, []string{"Placeholder"}},
		{"another token", []SecretRead{token("hf_anOlderToken", true)}, []bool{false}, []string{"Stale"}},
		{"and another key", []SecretRead{token("hf_theGivenToken", true), other}, []bool{true, true}, []string{"", ""}},
		{"another key missing", []SecretRead{token("hf_theGivenToken", true), {Name: "api", Key: "key", Env: "API_KEY"}}, []bool{true, false}, []string{"", "KeyMissing"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs := JudgeSecrets(&cfg, c.reads)
			if len(rs) != len(c.ok) {
				t.Fatalf("%d results, want %d: %+v", len(rs), len(c.ok), rs)
			}
			for i, r := range rs {
				if r.OK != c.ok[i] || r.Reason != c.reason[i] {
					t.Errorf("result %d: ok=%v reason=%q, want %v %q (%s)", i, r.OK, r.Reason, c.ok[i], c.reason[i], r.Message)
				}
				if strings.Contains(r.Message, "hf_theGivenToken") || strings.Contains(r.Message, "hf_anOlderToken") {
					t.Errorf("a token in the message: %s", r.Message)
				}
			}
		})
	}
}
