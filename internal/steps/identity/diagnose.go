package identity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/grants"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/rollout"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/adapter"
)

// How long IAM takes to apply a grant (cloud.google.com/iam/docs/
// access-change-propagation): typically 2 minutes, sometimes 7 or more.
const (
	PropagationTypical = 2 * time.Minute
	PropagationLong    = 7 * time.Minute
)

// Diagnosis is why the adapter does not serve the HPA's metric, as
// vllm-hpa tells from its own evidence. The real adapter answers any
// failure to read a metric's descriptor (no identity yet, a missing or
// unpropagated grant, a disabled or deleted account, the Monitoring API
// off) with one 404, "the server could not find the descriptor for
// metric"; and a metric Cloud Monitoring has no samples of alike.
type Diagnosis struct {
	// Reason names the cause: IdentityNotSet, MonitoringAPIDisabled,
	// AnnotationMismatch, AccountMissing, AccountDisabled, GrantMissing,
	// IAMPropagating, NoSamples, SamplesNotRead, Unexplained.
	Reason  string
	Message string
}

// Why is the evidence a diagnosis judges: the identity as read, the
// samples of the metric in Cloud Monitoring as the caller reads them, and
// the adapter's pods.
type Why struct {
	Identity Evidence
	// IdentityErr: the identity could not be read (why).
	IdentityErr error
	// Gauge is the metric's vLLM gauge; Pods the workload's Ready pods.
	Gauge string
	Pods  []string
	// Served are the pods the adapter gave a value for (when known): its
	// identity then works.
	Served []string
	// Samples are the pods with a sample in Cloud Monitoring; NoSuchMetric
	// when it knows no sample of the metric at all; SamplesErr when they
	// could not be read (MonitoringOff when because the API is off).
	Samples       map[string]float64
	NoSuchMetric  bool
	SamplesErr    error
	MonitoringOff bool
	// AdapterExit is why the adapter's pods exit at start ("" when they
	// do not).
	AdapterExit      string
	AdapterNamespace string
	Now              time.Time
}

// Judge names the cause from the evidence, the likeliest first. When the
// adapter serves some pods its identity works, so only the samples of the
// others can be the cause. Otherwise: the identity not set up, the
// Monitoring API off, the annotation, the account, each grant; then no
// samples in Cloud Monitoring (a cause whatever else is), a grant too
// recent for IAM to have applied it, samples that could not be read.
func Judge(w Why) Diagnosis {
	e := w.Identity
	record := grants.Read(e.KSA)
	if len(w.Served) > 0 {
		return w.missingSamples("the adapter serves " + strings.Join(w.Served, ", ") + ", so its identity works")
	}
	switch {
	case e.KSA == nil && w.IdentityErr == nil:
		return Diagnosis{"IdentityNotSet", "the adapter's Kubernetes service account does not exist: run vllm-hpa adapter, then vllm-hpa identity"}
	case e.KSA != nil && record == nil && (w.IdentityErr != nil || !anyHeld(e)):
		// No record: the identity step has not run (or ran before
		// vllm-hpa kept one, and then some grant would be in place).
		return Diagnosis{"IdentityNotSet", "the adapter has no Workload Identity yet (vllm-hpa identity has not given it one): run vllm-hpa identity"}
	case w.IdentityErr != nil:
		return Diagnosis{"IdentityNotRead", "the adapter's identity could not be read (" + w.IdentityErr.Error() + "), so the cause is not known: " + w.samplesSaid()}
	case w.MonitoringOff:
		return Diagnosis{"MonitoringAPIDisabled", "the Cloud Monitoring API is off on the project, so the adapter reads nothing: " + w.SamplesErr.Error()}
	}
	if got := e.KSA.GetAnnotations()[WorkloadIdentityAnnotation]; got != e.WantAnnotation {
		return Diagnosis{"AnnotationMismatch", fmt.Sprintf("the adapter's Kubernetes service account has %s=%q, want %q: run vllm-hpa identity", WorkloadIdentityAnnotation, got, e.WantAnnotation)}
	}
	if e.Mode == "gsa" {
		switch a := e.Account; {
		case a.Unseen:
			// A new account is not seen for about a minute.
		case !a.Found:
			return Diagnosis{"AccountMissing", "the Google service account " + a.Email + " the adapter acts as does not exist (deleted?): run vllm-hpa identity"}
		case a.Disabled:
			return Diagnosis{"AccountDisabled", "the Google service account " + a.Email + " is disabled, so the adapter gets no token: gcloud iam service-accounts enable " + a.Email}
		}
	}
	for _, b := range e.Bindings {
		if !b.Held {
			return Diagnosis{"GrantMissing", b.Member + " does not hold " + b.Role + " on " + b.Resource + " (removed by someone?): run vllm-hpa identity"}
		}
	}
	if len(w.Pods) == 0 {
		return Diagnosis{"NoReadyPods", "the identity's grants are in place; the Deployment has no Ready pod for the adapter to serve (vllm-hpa verify, deploy)"}
	}
	// Every grant is in place as IAM shows it. No samples is a cause
	// whatever else is: the adapter cannot serve what Cloud Monitoring
	// does not hold.
	propagating := ""
	if g, ok := newestMade(record); ok && w.Now.Sub(g.At) < PropagationLong {
		age := w.Now.Sub(g.At).Round(time.Second)
		left := "IAM applies most grants within 2 minutes: allow up to " + (PropagationLong - age).Round(time.Second).String() + " more"
		if age < PropagationTypical {
			left = fmt.Sprintf("about %s left of the usual 2 minutes (up to %s of the 7 or more it can take)", (PropagationTypical - age).Round(time.Second), (PropagationLong - age).Round(time.Second))
		}
		propagating = fmt.Sprintf("IAM still propagating: %s for %s was granted %s ago; %s", g.Role, g.Member, age, left)
	}
	if w.SamplesErr == nil && (w.NoSuchMetric || len(w.Samples) == 0) {
		msg := "every grant is in place; Cloud Monitoring holds no sample of " + w.Gauge + " for the pods yet: " + samplesWait
		if propagating != "" {
			msg += "; and " + propagating
		}
		return Diagnosis{"NoSamples", msg}
	}
	if propagating != "" {
		return Diagnosis{"IAMPropagating", propagating}
	}
	if w.SamplesErr != nil {
		return Diagnosis{"SamplesNotRead", "every grant is in place as IAM shows it; the samples in Cloud Monitoring could not be read (" + w.SamplesErr.Error() + ")" + w.exitSaid()}
	}
	return w.missingSamples("every grant is in place, older than IAM's propagation")
}

// samplesWait is how long samples take to appear.
const samplesWait = "Managed Prometheus writes one within a scrape interval and a minute, a brand-new metric takes up to 10 minutes; if it lasts, check that Managed Prometheus scrapes the pods (vllm-hpa verify, monitor)"

// missingSamples names the pods Cloud Monitoring holds no sample of, given
// what is known of the identity; Unexplained when every pod has one.
func (w Why) missingSamples(identity string) Diagnosis {
	var missing []string
	for _, p := range w.Pods {
		if _, ok := w.Samples[p]; !ok && !slices.Contains(w.Served, p) {
			missing = append(missing, p)
		}
	}
	switch {
	case w.SamplesErr != nil:
		return Diagnosis{"SamplesNotRead", identity + "; the samples in Cloud Monitoring could not be read (" + w.SamplesErr.Error() + ")"}
	case len(missing) > 0:
		return Diagnosis{"NoSamples", identity + "; Cloud Monitoring holds no sample of " + w.Gauge + " for " + strings.Join(missing, ", ") + " yet (a new pod appears after its first scrape and a minute of ingestion)"}
	}
	return Diagnosis{"Unexplained", identity + ", and Cloud Monitoring holds samples for every pod" + w.exitSaid() + "; see the adapter's log: kubectl logs -n " + w.AdapterNamespace + " deploy/" + adapter.DeploymentName}
}

func (w Why) samplesSaid() string {
	switch {
	case w.SamplesErr != nil:
		return "the samples could not be read either (" + w.SamplesErr.Error() + ")"
	case w.NoSuchMetric || len(w.Samples) == 0:
		return "Cloud Monitoring holds no sample of " + w.Gauge + " for the pods"
	}
	return fmt.Sprintf("Cloud Monitoring holds samples of %s for %d pods, so the adapter's identity is the likely cause", w.Gauge, len(w.Samples))
}

func (w Why) exitSaid() string {
	if w.AdapterExit == "" {
		return ""
	}
	return "; the adapter's pods exit at start: " + w.AdapterExit
}

// anyHeld reports whether any grant the identity needs is in place.
func anyHeld(e Evidence) bool {
	for _, b := range e.Bindings {
		if b.Held {
			return true
		}
	}
	return false
}

// newestMade is the grant vllm-hpa made last, by the record.
func newestMade(record []grants.Grant) (grants.Grant, bool) {
	var newest grants.Grant
	found := false
	for _, g := range record {
		if g.Made && (!found || g.At.After(newest.At)) {
			newest, found = g, true
		}
	}
	return newest, found
}

// Explain reads the evidence and judges why the adapter does not serve
// the metric of gauge for the workload's Ready pods; served are the pods
// it did give a value for, when the caller knows. Reads it cannot make (no
// Google credentials, a permission, a cluster it cannot name) are said,
// not guessed.
func Explain(ctx context.Context, cfg *config.Config, deps step.Deps, gauge string, served []string) Diagnosis {
	s := Definition{}.New(cfg, deps).(*Identity)
	w := Why{Gauge: gauge, Served: served, AdapterNamespace: cfg.Adapter.Namespace, Now: time.Now()}
	if deps.Kube == nil {
		return Diagnosis{"IdentityNotRead", "no Kubernetes connection to read the adapter's identity"}
	}
	w.Identity, w.IdentityErr = s.readEvidence(ctx)
	pods, err := deps.Kube.Typed.CoreV1().Pods(cfg.Workload.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.Set{"app": cfg.Workload.AppLabel}.String()})
	if err == nil {
		for i := range pods.Items {
			if p := &pods.Items[i]; p.DeletionTimestamp == nil && kube.PodReady(p) {
				w.Pods = append(w.Pods, p.Name)
			}
		}
		sort.Strings(w.Pods)
	}
	w.AdapterExit = adapterExit(ctx, deps.Kube, cfg)
	location, cluster := cfg.Location, cfg.Cluster
	if cluster == "" {
		location, cluster = deps.ClusterLocation, deps.ClusterName
	}
	switch {
	case deps.GCP == nil || deps.GCP.Monitoring == nil:
		w.SamplesErr = errors.New("not read: no Google API clients")
		return Judge(w)
	case cluster == "" || location == "":
		// The series are the cluster's by name: a query without it
		// would find nothing and say so falsely.
		w.SamplesErr = errors.New("not read: the cluster's name and location are not known (give --cluster and --location, or use the kubeconfig context gcloud writes, gke_PROJECT_LOCATION_CLUSTER)")
		return Judge(w)
	case len(w.Pods) == 0:
		return Judge(w)
	}
	w.Samples, w.SamplesErr = deps.GCP.Samples(s.withNotice(ctx), gcp.SeriesQuery{Project: cfg.Project, Location: location, Cluster: cluster, Namespace: cfg.Workload.Namespace, Gauge: gauge, Pods: w.Pods})
	if errors.Is(w.SamplesErr, gcp.ErrNoSuchMetric) {
		w.SamplesErr, w.NoSuchMetric = nil, true
	}
	if d, ok := gcp.As[*gcp.ServiceDisabledError](w.SamplesErr); ok && d.Service == gcp.ServiceMonitoring {
		w.MonitoringOff = true
	}
	return Judge(w)
}

// adapterExit is the last termination message of an adapter pod that
// exits at start ("" when none does).
func adapterExit(ctx context.Context, k *kube.Client, cfg *config.Config) string {
	pods, err := k.Typed.CoreV1().Pods(cfg.Adapter.Namespace).List(ctx, metav1.ListOptions{LabelSelector: adapter.Pods})
	if err != nil {
		return ""
	}
	for i := range pods.Items {
		if c, ok := rollout.CrashLoop(&pods.Items[i]); ok {
			return c.Error()
		}
	}
	return ""
}
