package identity

import (
	"fmt"
	"strings"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// projectNumberPlaceholder stands in a plan for the project's number,
// which only a read of the project gives.
const projectNumberPlaceholder = "PROJECT_NUMBER"

// GcloudCommands are the identity step's planned Google calls as the
// gcloud commands that make the same change, for a pipeline that owns
// the Google side itself. Every call the plan can hold has its command: a
// call without one is an error, not a line left out.
func GcloudCommands(cfg *config.Config, calls []step.GCPCall) ([]string, error) {
	var out []string
	needsNumber := false
	for _, c := range calls {
		member := c.Member
		if strings.Contains(member, projectNumberPlaceholder) {
			needsNumber = true
			member = strings.ReplaceAll(member, projectNumberPlaceholder, "${PROJECT_NUMBER}")
		}
		switch c.Method {
		case "projects.serviceAccounts.create":
			out = append(out, fmt.Sprintf("gcloud iam service-accounts create %s --project=%s --display-name=%s",
				cfg.Identity.GSAName, cfg.Project, shellQuote(cfg.Identity.GSADisplayName)))
		case "projects.setIamPolicy":
			out = append(out, fmt.Sprintf("gcloud projects add-iam-policy-binding %s --member=%s --role=%s --condition=None",
				cfg.Project, shellQuote(member), c.Role))
		case "projects.serviceAccounts.setIamPolicy":
			out = append(out, fmt.Sprintf("gcloud iam service-accounts add-iam-policy-binding %s --project=%s --member=%s --role=%s",
				cfg.GSAEmail(), cfg.Project, shellQuote(member), c.Role))
		case "buckets.setIamPolicy": // deploy's model bucket
			out = append(out, fmt.Sprintf("gcloud storage buckets add-iam-policy-binding gs://%s --member=%s --role=%s",
				strings.TrimPrefix(c.Resource, "projects/_/buckets/"), shellQuote(member), c.Role))
		case "objects.list": // a read: nothing to run
		default:
			return nil, fmt.Errorf("identity: no gcloud command for %s %s", c.API, c.Method)
		}
	}
	if needsNumber {
		out = append([]string{fmt.Sprintf("PROJECT_NUMBER=$(gcloud projects describe %s --format='value(projectNumber)')", cfg.Project)}, out...)
	}
	return out, nil
}

// shellQuote quotes s for sh: nothing in it expands but ${PROJECT_NUMBER}.
func shellQuote(s string) string {
	q := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`", "$", `\$`).Replace(s)
	return `"` + strings.ReplaceAll(q, `\${PROJECT_NUMBER}`, "${PROJECT_NUMBER}") + `"`
}
