package config

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// FieldError is bad input in one field: it names the field (with the flag and
// environment variable that set it), the value and what is allowed.
type FieldError struct {
	Field   string
	Value   string
	Allowed string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid %s = %q: must be %s", e.Field, e.Value, e.Allowed)
}

// NewFieldError is bad input in setting key: it names key with the flag
// and environment variable that set it.
func NewFieldError(key, value, allowed string) *FieldError { return newFieldError(key, value, allowed) }

// newFieldError names key together with the flag and env var that set it.
func newFieldError(key, value, allowed string) *FieldError {
	name := key
	if s, ok := SettingByKey(key); ok {
		var also []string
		if s.Flag != "" {
			also = append(also, "--"+s.Flag)
		}
		also = append(also, s.Env())
		name += " (" + strings.Join(also, ", ") + ")"
	}
	return &FieldError{Field: name, Value: value, Allowed: allowed}
}

var (
	// GCP project ids: 6-30 characters, lowercase letters, digits and
	// hyphens, starting with a letter and not ending with a hyphen.
	projectRE = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	// GKE cluster names: up to 40 characters, DNS-label-like.
	clusterRE  = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$`)
	locationRE = regexp.MustCompile(`^[a-z]+-[a-z]+[0-9]+(-[a-z])?$`)
	// Google service account ids: 6-30 characters.
	gsaRE = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	// An image repository (optional registry host[:port], path components)
	// with an optional tag and digest: the grammar of distribution/reference.
	repoPart = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	// A registry host is recognised, as in distribution/reference, only when
	// it has a dot or a port or is localhost; otherwise it is a path part.
	hostLabel = `[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?`
	hostPart  = `(?:(?:localhost|` + hostLabel + `(?:\.` + hostLabel + `)+)(?::[0-9]+)?|` + hostLabel + `:[0-9]+)`
	repoRE    = `(?:` + hostPart + `/)?` + repoPart + `(?:/` + repoPart + `)*`
	tagPart   = `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
	imageRE   = regexp.MustCompile(`^` + repoRE + `(?::` + tagPart + `)?(?:@sha256:[a-f0-9]{64})?$`)
	imageRepo = regexp.MustCompile(`^` + repoRE + `$`)
	tagRE     = regexp.MustCompile(`^` + tagPart + `$`)
	// GKE GPU accelerator types, e.g. nvidia-l4, nvidia-tesla-t4, nvidia-h100-80gb.
	acceleratorRE = regexp.MustCompile(`^nvidia-[a-z0-9]+(-[a-z0-9]+)*$`)
	// A Hugging Face repo id: [owner/]name.
	modelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$`)
	// A Cloud Storage bucket name: 3-63 lowercase letters, digits, '-' or
	// '_', starting and ending with a letter or digit (the dotted,
	// domain-named form is left out: it needs domain verification).
	bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$`)
	// The model's directory in the bucket: path parts of letters, digits,
	// '.', '_' and '-' (no shell or URL metacharacter: the path is printed
	// in commands to copy and passed to vLLM).
	objectPathRE = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?$`)
	emailRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*@[a-z0-9][a-z0-9.-]*\.[a-z]+$`)
)

// EndpointTypes are the values of endpoint-type.
var EndpointTypes = []string{"public", "private", "dns"}

var logLevels = []string{"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}

// Validate checks every field and returns one *FieldError per bad field
// (joined), or nil. It runs before any command changes anything. The
// project is required.
func (c *Config) Validate() error { return c.validate(true) }

// ValidateWithoutProject is Validate for commands that need no project
// (load against an --endpoint): a project, if set, must still be valid.
func (c *Config) ValidateWithoutProject() error { return c.validate(false) }

func (c *Config) validate(needProject bool) error {
	var errs []error
	add := func(key, value, allowed string) {
		errs = append(errs, newFieldError(key, value, allowed))
	}
	k8s := func(key, value string, check func(string) []string, what string) {
		if msgs := check(value); len(msgs) > 0 {
			add(key, value, what+" ("+msgs[0]+")")
		}
	}
	dnsLabel := func(key, value string) {
		k8s(key, value, validation.IsDNS1123Label, "a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters")
	}
	dnsSubdomain := func(key, value string) {
		k8s(key, value, validation.IsDNS1123Subdomain, "a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253 characters")
	}
	labelValue := func(key, value string) {
		if value == "" {
			add(key, value, "a non-empty label value")
			return
		}
		k8s(key, value, validation.IsValidLabelValue, "a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric")
	}
	rangeInt := func(key string, v, lo, hi int32) {
		if v < lo || v > hi {
			add(key, fmt.Sprint(v), fmt.Sprintf("between %d and %d", lo, hi))
		}
	}
	seconds := func(key string, d, lo, hi time.Duration) {
		switch {
		case d%time.Second != 0:
			add(key, d.String(), "a whole number of seconds")
		case d < lo || d > hi:
			add(key, d.String(), fmt.Sprintf("between %s and %s", lo, hi))
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			add(key, d.String(), "a positive duration, such as 30s or 5m")
		}
	}
	quantity := func(key, value string) {
		q, err := resource.ParseQuantity(value)
		if err != nil || q.Sign() <= 0 {
			add(key, value, "a positive Kubernetes quantity, such as 2, 500m or 10Gi")
		}
	}
	oneOf := func(key, value string, allowed ...string) {
		for _, a := range allowed {
			if value == a {
				return
			}
		}
		add(key, value, "one of "+strings.Join(allowed, ", "))
	}

	switch {
	case c.Project == "" && !needProject:
	case c.Project == "":
		add("project", "", "set: the GCP project id, e.g. --project my-project")
	case !projectRE.MatchString(c.Project):
		add("project", c.Project, "a GCP project id: 6-30 lowercase letters, digits or hyphens, starting with a letter, not ending with a hyphen")
	}
	if c.Cluster != "" && !clusterRE.MatchString(c.Cluster) {
		add("cluster", c.Cluster, "a GKE cluster name: 1-40 lowercase letters, digits or hyphens, starting with a letter")
	}
	if c.Location != "" && !locationRE.MatchString(c.Location) {
		add("location", c.Location, "a GCP region or zone, such as us-central1 or us-central1-a")
	}
	if (c.Cluster == "") != (c.Location == "") {
		if c.Cluster == "" {
			add("cluster", c.Cluster, "set together with location")
		} else {
			add("location", c.Location, "set together with cluster")
		}
	}
	oneOf("endpoint-type", c.EndpointType, EndpointTypes...)
	labelValue("instance", c.Instance)

	w := c.Workload
	dnsLabel("workload.namespace", w.Namespace)
	dnsSubdomain("workload.deployment", w.Deployment)
	rangeInt("workload.replicas", w.Replicas, 1, 1000)
	labelValue("workload.app-label", w.AppLabel)
	labelValue("workload.model-label", w.ModelLabel)
	labelValue("workload.server-label", w.ServerLabel)
	dnsLabel("workload.container", w.Container)
	if !imageRE.MatchString(w.Image) {
		add("workload.image", w.Image, "an image reference such as vllm/vllm-openai:v0.11.0")
	}
	if !modelRE.MatchString(w.Model) {
		add("workload.model", w.Model, "a Hugging Face model id such as google/gemma-3-1b-it")
	}
	rangeInt("workload.port", w.Port, 1, 65535)
	rangeInt("workload.tensor-parallel-size", w.TensorParallel, 1, 64)
	oneOf("workload.log-level", w.LogLevel, logLevels...)
	quantity("workload.cpu", w.CPU)
	quantity("workload.memory", w.Memory)
	quantity("workload.ephemeral-storage", w.EphemeralStorage)
	rangeInt("workload.gpus", w.GPUs, 1, 16)
	if !acceleratorRE.MatchString(w.Accelerator) {
		add("workload.accelerator", w.Accelerator, "a GKE GPU accelerator type such as nvidia-l4, nvidia-tesla-t4 or nvidia-h100-80gb")
	}
	oneOf("workload.gpu-driver-version", w.GPUDriverVersion, "latest", "default")
	seconds("workload.drain", w.Drain, 0, time.Hour)
	if w.ModelSource != "" {
		if msg := modelSourceProblem(w); msg != "" {
			add("workload.model-source", w.ModelSource, msg)
		} else if officialImageBefore(w.Image, 0, 11, 1) {
			add("workload.image", w.Image, "vLLM 0.11.1 or later with workload.model-source (earlier images lack the Run:ai streamer's Cloud Storage client), such as "+StreamerImage)
		}
		// The vLLM pods' own service account takes the Deployment's name:
		// never one that others' pods run as.
		switch {
		case w.OwnServiceAccount() == "default":
			add("workload.deployment", w.Deployment, "another name than default with workload.model-source: the vLLM pods' own service account takes the Deployment's name, and default is every pod's of the namespace")
		case w.Namespace == c.Adapter.Namespace && w.OwnServiceAccount() == c.Adapter.ServiceAccount:
			add("workload.deployment", w.Deployment, "another name than the adapter's service account ("+c.Adapter.Namespace+"/"+c.Adapter.ServiceAccount+") with workload.model-source: the vLLM pods' own service account takes the Deployment's name")
		}
	}
	if w.ComputeClass != "" {
		k8s("workload.compute-class", w.ComputeClass, validation.IsDNS1123Subdomain, "a ComputeClass name: lowercase letters, digits, '-' and '.'")
	}

	dnsSubdomain("hf-token.secret-name", c.HFToken.SecretName)
	k8s("hf-token.secret-key", c.HFToken.SecretKey, validation.IsConfigMapKey, "a Secret key: letters, digits, '-', '_' or '.'")
	k8s("hf-token.env-name", c.HFToken.EnvName, validation.IsEnvVarName, "an environment variable name")

	k8s("service.name", c.Service.Name, validation.IsDNS1035Label, "a DNS-1035 label: lowercase letters, digits and '-', starting with a letter, at most 63 characters")
	rangeInt("service.port", c.Service.Port, 1, 65535)

	dnsSubdomain("monitoring.name", c.Monitoring.Name)
	if !strings.HasPrefix(c.Monitoring.Path, "/") || strings.ContainsAny(c.Monitoring.Path, " ?#") {
		add("monitoring.path", c.Monitoring.Path, "a URL path starting with /, such as /metrics")
	}
	seconds("monitoring.interval", c.Monitoring.Interval, time.Second, time.Hour)

	dnsLabel("adapter.namespace", c.Adapter.Namespace)
	dnsSubdomain("adapter.service-account", c.Adapter.ServiceAccount)
	if !imageRepo.MatchString(c.Adapter.Image) {
		add("adapter.image", c.Adapter.Image, "an image repository without a tag, such as gcr.io/gke-release/custom-metrics-stackdriver-adapter")
	}
	if !tagRE.MatchString(c.Adapter.Tag) {
		add("adapter.tag", c.Adapter.Tag, "an image tag such as v0.16.10-gke.0")
	}

	oneOf("identity.mode", c.Identity.Mode, "gsa", "direct")
	if !gsaRE.MatchString(c.Identity.GSAName) {
		add("identity.gsa-name", c.Identity.GSAName, "a service account id: 6-30 lowercase letters, digits or hyphens, starting with a letter")
	}
	if n := len(c.Identity.GSADisplayName); n == 0 || n > 100 {
		add("identity.gsa-display-name", c.Identity.GSADisplayName, "1 to 100 characters")
	}
	if a := c.Identity.ImpersonateAccount; a != "" && !emailRE.MatchString(a) {
		add("identity.impersonate-service-account", a, "a service account email such as ci@my-project.iam.gserviceaccount.com")
	}

	h := c.HPA
	dnsSubdomain("hpa.name", h.Name)
	rangeInt("hpa.min-replicas", h.MinReplicas, 1, 1000)
	if h.MaxReplicas < h.MinReplicas || h.MaxReplicas > 1000 {
		add("hpa.max-replicas", fmt.Sprint(h.MaxReplicas), fmt.Sprintf("between hpa.min-replicas (%d) and 1000", h.MinReplicas))
	}
	keys := c.MetricKeys()
	for i, k := range keys {
		if _, ok := Metrics[k]; !ok || slices.Contains(keys[:i], k) {
			add("hpa.metric", h.Metric, "one of "+strings.Join(MetricNames(), ", ")+", or several joined by + (such as waiting+kv-cache: the HPA scales on whichever asks for most replicas), each once")
			keys = nil
			break
		}
	}
	oneOf("hpa.backend", h.Backend, BackendAdapter, BackendNative, BackendAuto)
	if len(keys) > 0 && c.Given("hpa.target") && c.Given("hpa."+keys[0]+"-target") && *c.ownTarget(keys[0]) != h.Target {
		add("hpa."+keys[0]+"-target", fmt.Sprint(*c.ownTarget(keys[0])), fmt.Sprintf("equal to hpa.target (%g), or not set: %s is hpa.metric's first metric, whose target hpa.target gives", h.Target, keys[0]))
	}
	target := func(key, metric string, t float64) {
		switch {
		case !(t > 0) || t > 1e6:
			add(key, fmt.Sprint(t), "a number greater than 0 and at most 1000000 (average per pod), such as 4")
		case metric == "kv-cache" && t > 1:
			add(key, fmt.Sprint(t), "at most 1 for kv-cache: vllm:kv_cache_usage_perc is a fraction (1 is a full KV cache), such as 0.8")
		case math.Round(t*1000) < 1:
			// The HPA's target is a quantity in thousandths: less than
			// half of one would be written as 0, and the HPA would
			// scale on nothing.
			add(key, fmt.Sprint(t), "at least 0.001: the HPA's target is a quantity in thousandths, and this would round to 0")
		}
	}
	checked := map[string]bool{}
	if keys != nil {
		for _, m := range c.ScaledMetrics() {
			key := c.TargetKey(m.Key)
			target(key, m.Key, m.Target)
			checked[key] = true
		}
	}
	// A target given for a metric the HPA does not use is still checked:
	// a later --metric would use it.
	for _, m := range MetricNames() {
		if key := "hpa." + m + "-target"; c.Given(key) && !checked[key] {
			target(key, m, *c.ownTarget(m))
		}
	}
	// The API server's limits for HPA behavior.
	seconds("hpa.scale-up-stabilization", h.ScaleUpStabilization, 0, time.Hour)
	seconds("hpa.scale-down-stabilization", h.ScaleDownStabilization, 0, time.Hour)
	seconds("hpa.scale-up-period", h.ScaleUpPeriod, time.Second, 30*time.Minute)
	seconds("hpa.scale-down-period", h.ScaleDownPeriod, time.Second, 30*time.Minute)
	rangeInt("hpa.scale-up-pods", h.ScaleUpPods, 1, 1000)
	rangeInt("hpa.scale-up-percent", h.ScaleUpPercent, 1, 10000)
	rangeInt("hpa.scale-down-percent", h.ScaleDownPercent, 1, 100)

	// Every step's timeout, and cleanup's.
	for _, f := range fields(c) {
		if d, ok := f.value.Interface().(time.Duration); ok && strings.HasPrefix(f.key, "timeouts.") {
			positive(f.key, d)
		}
	}

	for _, ep := range []struct{ key, value string }{
		{"endpoints.iam", c.Endpoints.IAM},
		{"endpoints.resource-manager", c.Endpoints.ResourceManager},
		{"endpoints.container", c.Endpoints.Container},
		{"endpoints.service-usage", c.Endpoints.ServiceUsage},
		{"endpoints.monitoring", c.Endpoints.Monitoring},
	} {
		if ep.value != "" && strings.ContainsAny(ep.value, " \t") {
			add(ep.key, ep.value, "host:port or a URL, without spaces")
		}
	}
	return errors.Join(errs...)
}

// modelSourceProblem says what is wrong with workload.model-source ("":
// nothing).
func modelSourceProblem(w Workload) string {
	const want = "gs://BUCKET/PATH, the directory in a Cloud Storage bucket that holds the model (its config.json, tokenizer and *.safetensors), such as gs://my-models/google/gemma-3-1b-it"
	bucket, path, ok := w.ModelBucket()
	switch {
	case !ok:
		return want + " (only Cloud Storage is supported)"
	case !bucketRE.MatchString(bucket) || strings.HasPrefix(bucket, "goog") || strings.Contains(bucket, "google"):
		return want + ": the bucket name is 3-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit, not starting with goog or containing google"
	case strings.Contains(strings.TrimPrefix(w.ModelSource, GCSPrefix), "//"):
		return want + ": the path has an empty part (//)"
	case path == "" || !objectPathRE.MatchString(path):
		return want + ": the path is the model's directory (letters, digits, '.', '_', '-' and '/'), not the bucket's root"
	}
	for _, part := range strings.Split(path, "/") {
		if part == "." || part == ".." {
			return want + ": the path may not hold . or .. parts"
		}
	}
	// Cloud Storage's object naming rules: a name is at most 1024 bytes
	// (the model's files are PATH/config.json and beside it), and none
	// starts with .well-known/acme-challenge/.
	switch {
	case len(path)+len("/config.json") > maxObjectName:
		return fmt.Sprintf("%s: the path is %d bytes; Cloud Storage object names are at most %d, so PATH/config.json must fit", want, len(path), maxObjectName)
	case strings.HasPrefix(path+"/", ".well-known/acme-challenge/"):
		return want + ": Cloud Storage object names may not start with .well-known/acme-challenge/"
	}
	return ""
}

// maxObjectName is Cloud Storage's limit on an object's name, in bytes.
const maxObjectName = 1024

// officialVersionRE reads the release of an official vLLM image's tag.
var officialVersionRE = regexp.MustCompile(`^(?:docker\.io/|index\.docker\.io/)?vllm/vllm-openai:v?(\d+)\.(\d+)\.(\d+)(?:$|[^0-9])`)

// officialImageBefore reports whether image is an official vLLM image of
// a release before major.minor.patch (an image it cannot read the
// release of is not).
func officialImageBefore(image string, major, minor, patch int) bool {
	m := officialVersionRE.FindStringSubmatch(image)
	if m == nil {
		return false
	}
	var v [3]int
	for i := range v {
		fmt.Sscan(m[i+1], &v[i])
	}
	return slices.Compare(v[:], []int{major, minor, patch}) < 0
}
