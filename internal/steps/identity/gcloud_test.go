package identity

import (
	"strings"
	"testing"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Every call either route can plan has its gcloud command, in order, and
// nothing a value holds can break out of its quotes.
func TestGcloudCommands(t *testing.T) {
	cfg := config.Default()
	cfg.Project = "my-proj"
	cfg.Identity.GSADisplayName = "Adapter \"$(rm -rf /)\" `x`"
	got, err := GcloudCommands(&cfg, Calls(&cfg, ""))
	if err != nil || len(got) != 3 {
		t.Fatalf("gsa route: %v, %v", got, err)
	}
	if !strings.Contains(got[0], `--display-name="Adapter \"\$(rm -rf /)\" \`+"`x\\`"+`"`) {
		t.Errorf("display name not quoted for sh: %s", got[0])
	}
	cfg.Identity.Mode = "direct"
	got, err = GcloudCommands(&cfg, Calls(&cfg, ""))
	if err != nil || len(got) != 2 || !strings.HasPrefix(got[0], "PROJECT_NUMBER=$(gcloud projects describe my-proj") ||
		!strings.Contains(got[1], `--member="principal://iam.googleapis.com/projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/my-proj.svc.id.goog/subject/ns/custom-metrics/sa/custom-metrics-stackdriver-adapter"`) {
		t.Errorf("direct route: %q, %v", got, err)
	}
	if _, err := GcloudCommands(&cfg, []step.GCPCall{{API: "x.googleapis.com", Method: "unknown"}}); err == nil {
		t.Error("a call without a command was left out silently")
	}
}
