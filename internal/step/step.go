// Package step defines the one abstraction every command runs: a Step of the
// walkthrough that can describe (plan), apply, check and delete itself.
// `up` applies steps in order, `verify` checks them, `cleanup` deletes them
// in reverse, and every single-step command runs one. The steps themselves
// live in internal/steps/<name>, listed in order by internal/steps.
package step

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	container "google.golang.org/api/container/v1"
	storage "google.golang.org/api/storage/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
)

// Definition is a step as the registry (internal/steps) lists it: its
// name, its command's help, and how to build it.
type Definition interface {
	// Name is the step's command name: deploy, monitor, adapter, identity, hpa.
	Name() string
	// Help is the step command's help text.
	Help() Help
	// New builds the step for a configuration and the clients it acts
	// through.
	New(cfg *config.Config, deps Deps) Step
	// Settings are the configuration keys the step reads that its
	// command (and up's, cleanup's, verify's) takes as flags.
	Settings() []string
	// Timeout is the key of how long the step waits for its conditions
	// (timeouts.NAME), which --timeout sets.
	Timeout() string
}

// ClusterFacts are what a step's preconditions judge: the cluster as the
// container API describes it and names it, with the run's configuration
// and clients (to read more of the cluster where the container API says
// nothing, as of ComputeClasses).
type ClusterFacts struct {
	Config  *config.Config
	Deps    Deps
	Cluster *container.Cluster
	Wants   gcp.ClusterWants
}

// Preconditioner is a Definition with needs of the project or the
// cluster, checked before anything changes.
type Preconditioner interface {
	// Services are the Google APIs the step calls, or that what it
	// builds needs enabled.
	// A step with any calls Google, so needs credentials
	// (Requirements.GoogleAPIs).
	Services(cfg *config.Config) []string
	// Preconditions judge the cluster for the step.
	Preconditions(ctx context.Context, f ClusterFacts) ([]gcp.Precondition, error)
}

// ProjectPreconditioner is a Definition with needs of the project that do
// not depend on the cluster (deploy's model bucket), checked before
// anything changes whenever Google API clients are there, whether or not
// the cluster is known.
type ProjectPreconditioner interface {
	ProjectPreconditions(ctx context.Context, cfg *config.Config, deps Deps) ([]gcp.Precondition, error)
}

// Probe is a step's extra section of verify: what reading the step's
// objects cannot prove (the server's /metrics after deploy; the HPA's
// metric through the route it reads, once the adapter is up). It runs
// right after the checks of step After, and only when After is verified.
type Probe struct {
	Name  string // the section's name in verify's output
	After string // the step it follows
	Check func(ctx context.Context, env ProbeEnv) []Result
}

// ProbeEnv is what a probe reads through.
type ProbeEnv struct {
	Config *config.Config
	Deps   Deps
	// ServerURL is the vLLM server's base URL: a port-forward to a Ready
	// pod, or --endpoint.
	ServerURL func(ctx context.Context) (string, error)
}

// Prober is a Definition that adds a section to verify.
type Prober interface {
	Probe() Probe
}

// BackendUser is a Definition whose step only one hpa.backend uses (the
// adapter and identity: not native); the others serve every backend.
type BackendUser interface {
	UsedWith(cfg *config.Config) bool
}

// Retirer is a step that, once the HPA reads its metric, removes what this
// instance built for a backend it no longer uses.
type Retirer interface {
	Retire(ctx context.Context) error
}

// DeleteGuard is a Step that can tell, before a cleanup deletes anything,
// that it could not finish its own part (a grant in Google IAM to remove
// without the clients to remove it), so that the cleanup stops before it
// starts rather than half way.
type DeleteGuard interface {
	GuardDelete(ctx context.Context) error
}

// Requirements are what a step needs before it may start; a Definition
// that needs anything says so with Requires.
type Requirements struct {
	// Token: the Hugging Face token (HF_TOKEN or --hf-token-file).
	Token bool
	// GoogleAPIs: Google API clients, so credentials: a step that
	// declares Services (Preconditioner).
	GoogleAPIs bool
	// ExplainsWithGoogle: the step works without Google API clients but
	// uses them when it can (hpa names why the adapter serves no value
	// from IAM and Cloud Monitoring).
	ExplainsWithGoogle bool
}

// Requirer is a Definition with requirements.
type Requirer interface {
	Requires(cfg *config.Config) Requirements
}

// Help is a command's help text, as Cobra shows it; Example's lines run
// as written in the docs' tests (docs/commands).
type Help struct {
	Short, Long, Example string
}

// Deps are the clients and settings the steps act through.
type Deps struct {
	// Kube is the Kubernetes connection; nil for render and dry runs.
	Kube *kube.Client
	// Report receives progress; nil discards it (see Reporter).
	Report Reporter
	// GCP are the Google API clients; nil for render and dry runs, or when
	// they could not be opened (GCPError says why).
	GCP      *gcp.Clients
	GCPError error
	// Cluster is the GKE cluster as the container API described it, when
	// already read (to connect); the preconditions read it otherwise.
	Cluster *container.Cluster
	// OpenStorage opens the Cloud Storage client without the other Google
	// clients: deploy and cleanup need it only to remove a bucket grant an
	// earlier run recorded, which they learn from the cluster (nil: none
	// can be opened).
	OpenStorage func(ctx context.Context) (*storage.Service, error)
	// ClusterName and ClusterLocation name the GKE cluster the kubeconfig
	// context reaches, when its name says (gke_PROJECT_LOCATION_CLUSTER).
	ClusterName, ClusterLocation string
	// ForceConflicts takes over fields and APIServices owned by others.
	ForceConflicts bool
	// Adopt takes over existing objects (and the Google service account)
	// vllm-hpa did not create, marking them as adopted.
	Adopt bool
	// NoWait (cleanup --wait=false): a deletion the server accepted is
	// done, not waited for until the object is gone; a namespace's
	// contents go in the background (a later run waits for it).
	NoWait bool
	// Namespaces, when set (cleanup), holds the waits for the namespaces
	// the steps delete, run after the last step's deletions
	// (Namespaces.Wait): every namespace takes at least 5 s to go (the
	// namespace controller holds each deletion that long before it
	// starts), and their deletions then run at once, so a cleanup
	// deleting the adapter's and the workload's pays that once, not once
	// a step. Nil: each is waited for at once.
	Namespaces *NamespaceWaits
}

// NamespaceWaits are the waits for deleted namespaces a cleanup puts off
// until its steps have deleted everything else (Deps.Namespaces).
type NamespaceWaits struct {
	mu    sync.Mutex
	waits []func(context.Context) error
}

// Add puts off wait until Wait.
func (n *NamespaceWaits) Add(wait func(context.Context) error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.waits = append(n.waits, wait)
}

// Wait runs the waits put off so far, in the order they were added (the
// deletions are all under way: the first wait takes longest), and
// forgets them; it runs each even when one fails (each says what it
// waited for), and returns their errors joined.
func (n *NamespaceWaits) Wait(ctx context.Context) error {
	n.mu.Lock()
	waits := n.waits
	n.waits = nil
	n.mu.Unlock()
	var errs []error
	for _, wait := range waits {
		errs = append(errs, wait(ctx))
	}
	return errors.Join(errs...)
}

// Reporter returns deps' reporter, or one that drops everything.
func (d Deps) Reporter() Reporter {
	if d.Report == nil {
		return Discard
	}
	return d.Report
}

// Step is one step of the walkthrough.
type Step interface {
	// Name is the step's command name: deploy, monitor, adapter, identity, hpa.
	Name() string
	// Plan says what Apply would create or change, touching nothing.
	Plan(ctx context.Context) (*Plan, error)
	// Apply makes the step's state true and waits until its checks pass.
	Apply(ctx context.Context) error
	// Check reads the step's state and reports each condition.
	Check(ctx context.Context) ([]Result, error)
	// PlanDelete says what Delete would remove, release or keep, reading
	// but changing nothing. pending holds what earlier steps of the same
	// cleanup would delete (namespaces are judged as if it were gone); the
	// step adds its own deletions to it.
	PlanDelete(ctx context.Context, pending Pending) (*Plan, error)
	// Delete removes what the step created (only what vllm-hpa owns).
	Delete(ctx context.Context) error
}

// Pending is the set of objects (by UID) a cleanup deletes before the
// step being planned.
type Pending map[string]bool

// Plan is what a step would do: the Kubernetes objects it applies and the
// Google API calls it makes.
type Plan struct {
	Step     string                       `json:"step"`
	Objects  []*unstructured.Unstructured `json:"-"`
	GCPCalls []GCPCall                    `json:"gcpCalls,omitempty"`
	// Removals are what a cleanup would do (PlanDelete), in order.
	Removals []Removal `json:"removals,omitempty"`
	// Notes are said on stderr with the plan (e.g. an object left out).
	Notes []string `json:"notes,omitempty"`
}

// Removal is one thing a cleanup would do to one object, IAM member or
// Google service account.
type Removal struct {
	// Object is "Kind namespace/name", or a Google resource.
	Object string `json:"object"`
	// Action is one of the Remove* values.
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
}

// What a cleanup does to each thing it finds.
const (
	RemoveDelete  = "delete"  // created by vllm-hpa for this instance (or its last user): deleted
	RemoveRelease = "release" // adopted: vllm-hpa's labels and fields removed, the object kept
	RemoveUnuse   = "unuse"   // shared and still used by other instances: this instance's mark removed
	RemoveKeep    = "keep"    // not vllm-hpa's, another instance's, or holding such: left as it is
	RemoveAbsent  = "absent"  // nothing there
)

// GCPCall is one mutating Google API call a step makes.
type GCPCall struct {
	API      string `json:"api"`      // e.g. iam.googleapis.com
	Method   string `json:"method"`   // e.g. projects.serviceAccounts.create
	Resource string `json:"resource"` // e.g. projects/my-proj
	Role     string `json:"role,omitempty"`
	Member   string `json:"member,omitempty"`
	Note     string `json:"note,omitempty"`
}

// Result is one check's outcome, printed by the output layer.
type Result struct {
	Step    string `json:"step"`
	Check   string `json:"check"`
	OK      bool   `json:"ok"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Reporter receives a step's progress; the output layer prints it.
type Reporter interface {
	// Action reports something done, e.g. "Deployment default/x created".
	Action(step, message string)
	// Waiting reports why a wait is not over yet.
	Waiting(step, reason string)
	// Result reports a check's outcome.
	Result(r Result)
}

// Discard is a Reporter that drops everything.
var Discard Reporter = discard{}

type discard struct{}

func (discard) Action(string, string)  {}
func (discard) Waiting(string, string) {}
func (discard) Result(Result)          {}

// Failed is the error of a step whose checks did not pass; the CLI exits 3.
type Failed struct {
	Results []Result
}

// ExitCode makes a failed check exit with exitcode.CheckFailed.
func (f *Failed) ExitCode() int { return exitcode.CheckFailed }

// Error names the failed check with its message when there is one; when
// there are more, one line each with its reason only (each check's own
// line already has its message), never one line of every message.
func (f *Failed) Error() string {
	var failed []Result
	for _, r := range f.Results {
		if !r.OK {
			failed = append(failed, r)
		}
	}
	if len(failed) == 1 {
		r := failed[0]
		msg := "check failed: " + r.Step + " " + r.Check
		if r.Reason != "" {
			msg += ": " + r.Reason
		}
		if r.Message != "" {
			msg += ": " + r.Message
		}
		return msg
	}
	lines := []string{fmt.Sprintf("%d checks failed (each with its details above):", len(failed))}
	for _, r := range failed {
		line := "  " + r.Step + "/" + r.Check
		if r.Reason != "" {
			line += ": " + r.Reason
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}
