package cmd

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
)

// gkeToken is the OAuth access token the fake token endpoint issues and the
// test kube-apiserver accepts, as GKE accepts Google OAuth tokens.
const gkeToken = "ya29.test-access-token"

// fakeGoogle is a token endpoint (for a service-account key's JWT flow) and
// a container API that describes the test control plane as a GKE cluster
// (and a Service Usage API with every API enabled).
type fakeGoogle struct {
	tokens, clusterGets atomic.Int32
	badAuth             atomic.Int32
}

func (f *fakeGoogle) serve(t *testing.T, cp *localcluster.ControlPlane) (tokenURL, containerURL string) {
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.tokens.Add(1)
		if r.ParseForm() != nil || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
			http.Error(w, "bad grant", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": gkeToken, "token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(tokenSrv.Close)
	containerSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+gkeToken {
			f.badAuth.Add(1)
			http.Error(w, `{"error":{"code":401,"message":"unauthenticated"}}`, http.StatusUnauthorized)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/services:batchGet") {
			// Service Usage: every API enabled.
			var services []any
			for _, n := range r.URL.Query()["names"] {
				services = append(services, map[string]any{"name": n, "state": "ENABLED", "config": map[string]any{"name": n[strings.LastIndex(n, "/")+1:]}})
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"services": services})
			return
		}
		f.clusterGets.Add(1)
		if r.URL.Path != "/v1/projects/my-proj/locations/us-central1/clusters/gpu-hpa" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":{"code":404,"message":"Not found: ` + r.URL.Path + `","status":"NOT_FOUND"}}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"name":                   "gpu-hpa",
			"status":                 "RUNNING",
			"endpoint":               strings.TrimPrefix(cp.URL, "https://"),
			"currentMasterVersion":   "1.37.2-gke.100",
			"masterAuth":             map[string]any{"clusterCaCertificate": base64.StdEncoding.EncodeToString(cp.PKI.CAPEM)},
			"autopilot":              map[string]any{"enabled": true},
			"workloadIdentityConfig": map[string]any{"workloadPool": "my-proj.svc.id.goog"},
			"monitoringConfig":       map[string]any{"managedPrometheusConfig": map[string]any{"enabled": true}},
		})
	}))
	t.Cleanup(containerSrv.Close)
	return tokenSrv.URL + "/token", containerSrv.URL + "/"
}

// serviceAccountKey writes an ADC file of type service_account whose token
// exchange goes to tokenURL.
func serviceAccountKey(t *testing.T, tokenURL string) string {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	b, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "my-proj",
		"private_key_id": "test",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "ci@my-proj.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      tokenURL,
	})
	return writeFile(t, t.TempDir(), "adc.json", string(b))
}

func TestConnectThroughContainerAPI(t *testing.T) {
	inst := newInstance(t, "gke", "gke-ns")
	cp := inst.tb.cp
	f := &fakeGoogle{}
	tokenURL, containerURL := f.serve(t, cp)
	adc := serviceAccountKey(t, tokenURL)
	env := map[string]string{
		"HF_TOKEN":                         "hf_testTOKEN",
		"GOOGLE_APPLICATION_CREDENTIALS":   adc,
		"KUBECONFIG":                       filepath.Join(t.TempDir(), "none"), // no kubeconfig at all
		"VLLM_HPA_ENDPOINTS_CONTAINER":     containerURL,
		"VLLM_HPA_ENDPOINTS_SERVICE_USAGE": containerURL,
		"VLLM_HPA_INSTANCE":                inst.name,
		"VLLM_HPA_WORKLOAD_NAMESPACE":      inst.namespace,
	}
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	code, out, errOut := run(t, "", env, "deploy", "--project", "my-proj", "--cluster", "gpu-hpa", "--location", "us-central1", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if _, err := cp.Client.AppsV1().Deployments(inst.namespace).Get(context.Background(), "vllm-gemma-deployment", metav1.GetOptions{}); err != nil {
		t.Errorf("deploy through the container API did not create the Deployment: %v", err)
	}
	// One read serves both the connection and the preconditions.
	if f.tokens.Load() == 0 || f.clusterGets.Load() != 1 || f.badAuth.Load() != 0 {
		t.Errorf("token exchanges %d, cluster gets %d, unauthenticated calls %d", f.tokens.Load(), f.clusterGets.Load(), f.badAuth.Load())
	}

	// A cluster that does not exist is a failed precondition naming it.
	code, _, errOut = run(t, "", env, "deploy", "--project", "my-proj", "--cluster", "other", "--location", "us-central1")
	if code != exitcode.Precondition || !strings.Contains(errOut, "projects/my-proj/locations/us-central1/clusters/other") {
		t.Errorf("missing cluster: exit %d, want %d naming it:\n%s", code, exitcode.Precondition, errOut)
	}
}
