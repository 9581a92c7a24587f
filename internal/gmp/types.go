// Package gmp has Go types for Google Cloud Managed Service for Prometheus's
// PodMonitoring (monitoring.googleapis.com/v1), written from the schema
// facts the stack depends on, so that rendered objects can be decoded
// strictly and the operator's status read in a typed way.
package gmp

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// GroupVersion of PodMonitoring.
var GroupVersion = schema.GroupVersion{Group: "monitoring.googleapis.com", Version: "v1"}

// Resource is the PodMonitoring resource for dynamic clients.
var Resource = GroupVersion.WithResource("podmonitorings")

// ConditionConfigurationCreateSuccess is PodMonitoring's one condition type:
// Unknown at first, True once the scrape configuration is generated, False
// with reason ScrapeConfigError. True does not prove that scraping works.
const ConditionConfigurationCreateSuccess = "ConfigurationCreateSuccess"

// PodMonitoring selects pods and says how to scrape them.
type PodMonitoring struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PodMonitoringSpec   `json:"spec"`
	Status            PodMonitoringStatus `json:"status,omitempty"`
}

// PodMonitoringSpec is the desired scrape configuration.
type PodMonitoringSpec struct {
	Selector     metav1.LabelSelector `json:"selector"`
	Endpoints    []ScrapeEndpoint     `json:"endpoints"` // 1 to 10
	TargetLabels TargetLabels         `json:"targetLabels,omitempty"`
	Limits       *ScrapeLimits        `json:"limits,omitempty"`
}

// ScrapeEndpoint is one port of the selected pods to scrape.
type ScrapeEndpoint struct {
	Port             intstr.IntOrString  `json:"port"` // name or number
	Scheme           string              `json:"scheme,omitempty"`
	Path             string              `json:"path,omitempty"` // default /metrics
	Params           map[string][]string `json:"params,omitempty"`
	Interval         string              `json:"interval"`          // required
	Timeout          string              `json:"timeout,omitempty"` // <= interval
	MetricRelabeling []RelabelingRule    `json:"metricRelabeling,omitempty"`
}

// RelabelingRule is a Prometheus metric relabeling rule.
type RelabelingRule struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    string   `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  string   `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// TargetLabels says which labels the scraped series carry. The default
// metadata set keeps pod, which the Stackdriver adapter filters on.
type TargetLabels struct {
	Metadata []string       `json:"metadata,omitempty"`
	FromPod  []LabelMapping `json:"fromPod,omitempty"`
}

// LabelMapping copies a pod label to a target label.
type LabelMapping struct {
	From string `json:"from"`
	To   string `json:"to,omitempty"`
}

// ScrapeLimits bound what one scrape may return.
type ScrapeLimits struct {
	Samples          uint64 `json:"samples,omitempty"`
	Labels           uint64 `json:"labels,omitempty"`
	LabelNameLength  uint64 `json:"labelNameLength,omitempty"`
	LabelValueLength uint64 `json:"labelValueLength,omitempty"`
}

// PodMonitoringStatus is what the Managed Prometheus operator reports.
type PodMonitoringStatus struct {
	ObservedGeneration int64                 `json:"observedGeneration,omitempty"`
	Conditions         []MonitoringCondition `json:"conditions,omitempty"`
	// EndpointStatuses appears only when the cluster's OperatorConfig
	// gmp-public/config enables features.targetStatus.
	EndpointStatuses []ScrapeEndpointStatus `json:"endpointStatuses,omitempty"`
}

// MonitoringCondition is a PodMonitoring status condition.
type MonitoringCondition struct {
	Type               string                 `json:"type"`
	Status             metav1.ConditionStatus `json:"status"`
	LastUpdateTime     metav1.Time            `json:"lastUpdateTime,omitempty"`
	LastTransitionTime metav1.Time            `json:"lastTransitionTime,omitempty"`
	Reason             string                 `json:"reason,omitempty"`
	Message            string                 `json:"message,omitempty"`
}

// ScrapeEndpointStatus is the health of one endpoint's targets.
type ScrapeEndpointStatus struct {
	Name               string        `json:"name"`
	ActiveTargets      int64         `json:"activeTargets,omitempty"`
	UnhealthyTargets   int64         `json:"unhealthyTargets,omitempty"`
	LastUpdateTime     metav1.Time   `json:"lastUpdateTime,omitempty"`
	SampleGroups       []SampleGroup `json:"sampleGroups,omitempty"`
	CollectorsFraction string        `json:"collectorsFraction,omitempty"`
}

// SampleGroup is a sample of targets sharing an error.
type SampleGroup struct {
	SampleTargets []SampleTarget `json:"sampleTargets,omitempty"`
	Count         *int32         `json:"count,omitempty"`
}

// SampleTarget is one scraped target and its last error.
type SampleTarget struct {
	Labels    map[string]string `json:"labels,omitempty"`
	LastError *string           `json:"lastError,omitempty"`
	Health    string            `json:"health,omitempty"`
}

// OperatorConfigResource is Managed Prometheus's OperatorConfig.
var OperatorConfigResource = GroupVersion.WithResource("operatorconfigs")

// The one OperatorConfig Managed Prometheus reads: gmp-public/config.
const (
	OperatorConfigNamespace = "gmp-public"
	OperatorConfigName      = "config"
)

// TargetStatusEnabled reads features.targetStatus.enabled of an
// OperatorConfig (nil: none, so off, as it is by default).
func TargetStatusEnabled(oc map[string]any) bool {
	f, _ := oc["features"].(map[string]any)
	ts, _ := f["targetStatus"].(map[string]any)
	on, _ := ts["enabled"].(bool)
	return on
}
