package gcpfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// GoogleError is one error as Google sends it, with the details Google
// attaches (google.rpc.ErrorInfo, PreconditionFailure, RetryInfo, Help),
// rendered as a gRPC status (GRPC) or a REST error body (WriteREST). The
// constructors below reproduce the documents Google sends for each cause
// (docs/troubleshooting.md cites them).
type GoogleError struct {
	Code    codes.Code
	HTTP    int
	Message string
	Details []proto.Message
	// Legacy is REST's error.errors[] ("error format v1"), which Google
	// still sends beside details on some APIs; gRPC has none.
	Legacy []LegacyItem
	// OnlyLegacy: the body is the v1 format alone, without the canonical
	// status (Cloud Storage's JSON API).
	OnlyLegacy bool
}

// LegacyItem is one entry of a REST error's legacy errors array.
type LegacyItem struct {
	Message      string `json:"message"`
	Domain       string `json:"domain"`
	Reason       string `json:"reason"`
	ExtendedHelp string `json:"extendedHelp,omitempty"`
}

// Error is its message (a GoogleError is also a Go error for the fakes'
// own plumbing).
func (e *GoogleError) Error() string { return e.Message }

// GRPC is the error a gRPC method returns.
func (e *GoogleError) GRPC() error {
	st := status.New(e.Code, e.Message)
	if len(e.Details) > 0 {
		v1 := make([]protoadapt.MessageV1, 0, len(e.Details))
		for _, d := range e.Details {
			v1 = append(v1, protoadapt.MessageV1Of(d))
		}
		if withDetails, err := st.WithDetails(v1...); err == nil {
			st = withDetails
		}
	}
	return st.Err()
}

// RESTBody is the JSON body of the REST answer.
func (e *GoogleError) RESTBody() []byte {
	details := []json.RawMessage{}
	for _, d := range e.Details {
		a, err := anypb.New(d)
		if err != nil {
			continue
		}
		b, err := protojson.Marshal(a)
		if err == nil {
			details = append(details, b)
		}
	}
	body := map[string]any{"code": e.HTTP, "message": e.Message}
	if !e.OnlyLegacy {
		body["status"] = codeName(e.Code)
	}
	if len(details) > 0 {
		body["details"] = details
	}
	if len(e.Legacy) > 0 {
		body["errors"] = e.Legacy
	}
	b, _ := json.Marshal(map[string]any{"error": body})
	return b
}

// WriteREST answers an HTTP request with the error.
func (e *GoogleError) WriteREST(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(e.HTTP)
	w.Write(e.RESTBody())
}

// codeName is the canonical name REST bodies carry, e.g. FAILED_PRECONDITION.
func codeName(c codes.Code) string {
	if c == codes.OK {
		return "OK"
	}
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// httpOf is the HTTP status of a canonical code (google/rpc/code.proto).
func httpOf(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return 400
	case codes.Unauthenticated:
		return 401
	case codes.PermissionDenied:
		return 403
	case codes.NotFound:
		return 404
	case codes.Aborted, codes.AlreadyExists:
		return 409
	case codes.ResourceExhausted:
		return 429
	case codes.Unimplemented:
		return 501
	case codes.Unavailable:
		return 503
	case codes.DeadlineExceeded:
		return 504
	}
	return 500
}

// Plain is an error with no details, as Google gives for most refusals of
// a request's content (INVALID_ARGUMENT, NOT_FOUND, ABORTED...).
func Plain(c codes.Code, format string, args ...any) *GoogleError {
	return &GoogleError{Code: c, HTTP: httpOf(c), Message: fmt.Sprintf(format, args...)}
}

// ServiceTitles are the titles Google's messages give the services.
var ServiceTitles = map[string]string{
	"iam.googleapis.com":                  "Identity and Access Management (IAM) API",
	"cloudresourcemanager.googleapis.com": "Cloud Resource Manager API",
	"container.googleapis.com":            "Kubernetes Engine API",
	"serviceusage.googleapis.com":         "Service Usage API",
	"monitoring.googleapis.com":           "Cloud Monitoring API",
	"storage.googleapis.com":              "Cloud Storage API",
}

// ServiceDisabled is a call to an API not enabled on the consumer project:
// 403 PERMISSION_DENIED, ErrorInfo SERVICE_DISABLED with the service, and
// a Help link to enable it.
func ServiceDisabled(service, projectNumber string) *GoogleError {
	title := ServiceTitles[service]
	if title == "" {
		title = service
	}
	url := "https://console.developers.google.com/apis/api/" + service + "/overview?project=" + projectNumber
	return &GoogleError{Code: codes.PermissionDenied, HTTP: 403,
		Message: title + " has not been used in project " + projectNumber + " before or it is disabled. Enable it by visiting " + url + " then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.",
		Details: []proto.Message{
			&errdetails.ErrorInfo{Reason: "SERVICE_DISABLED", Domain: "googleapis.com", Metadata: map[string]string{
				"service": service, "consumer": "projects/" + projectNumber, "serviceTitle": title, "activationUrl": url,
				"containerInfo": projectNumber}},
			&errdetails.Help{Links: []*errdetails.Help_Link{{Description: "Google developers console API activation", Url: url}}},
		}}
}

// PermissionDenied is a caller without permission on resource (a full
// resource name, or "" as some services leave it): 403, ErrorInfo
// IAM_PERMISSION_DENIED with the permission.
func PermissionDenied(domain, permission, resource string) *GoogleError {
	on := "resource"
	md := map[string]string{"permission": permission}
	if resource != "" {
		on = "resource '" + resource + "'"
		md["resource"] = resource
	}
	return &GoogleError{Code: codes.PermissionDenied, HTTP: 403,
		Message: fmt.Sprintf("Permission '%s' denied on %s (or it may not exist).", permission, on),
		Details: []proto.Message{&errdetails.ErrorInfo{Reason: "IAM_PERMISSION_DENIED", Domain: domain, Metadata: md}}}
}

// OrgPolicyViolation is a call an organization policy constraint refuses:
// 400 FAILED_PRECONDITION with a PreconditionFailure naming the
// constraint (Google gives no ErrorInfo for these).
func OrgPolicyViolation(constraint, subject, message string) *GoogleError {
	return &GoogleError{Code: codes.FailedPrecondition, HTTP: 400, Message: message,
		Details: []proto.Message{&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
			Type: "constraints/" + constraint, Subject: subject, Description: message}}}}}
}

// PerimeterViolation is a call VPC Service Controls blocks: 403
// PERMISSION_DENIED with a PreconditionFailure VPC_SERVICE_CONTROLS and
// ErrorInfo SECURITY_POLICY_VIOLATED carrying the violation's identifier.
func PerimeterViolation(service, uid, projectNumber string) *GoogleError {
	return &GoogleError{Code: codes.PermissionDenied, HTTP: 403,
		Message: "Request is prohibited by organization's policy. vpcServiceControlsUniqueIdentifier: " + uid,
		Details: []proto.Message{
			&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{Type: "VPC_SERVICE_CONTROLS", Description: uid}}},
			&errdetails.ErrorInfo{Reason: "SECURITY_POLICY_VIOLATED", Domain: "googleapis.com", Metadata: map[string]string{
				"service": service, "uid": uid, "consumer": "projects/" + projectNumber}},
		}}
}

// RateLimited is a call over a per-minute quota: 429 RESOURCE_EXHAUSTED,
// ErrorInfo RATE_LIMIT_EXCEEDED with the quota's metric and limit, and,
// when retry is set, a RetryInfo asking to wait that long.
func RateLimited(service, projectNumber string, retry time.Duration) *GoogleError {
	metric, limit := service+"/default_requests", "DefaultRequestsPerMinutePerProject"
	e := &GoogleError{Code: codes.ResourceExhausted, HTTP: 429,
		Message: fmt.Sprintf("Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of service '%s' for consumer 'project_number:%s'.", service, projectNumber),
		Details: []proto.Message{
			&errdetails.ErrorInfo{Reason: "RATE_LIMIT_EXCEEDED", Domain: "googleapis.com", Metadata: map[string]string{
				"consumer": "projects/" + projectNumber, "quota_limit": limit, "quota_limit_value": "600",
				"quota_location": "global", "quota_metric": metric, "service": service}},
			&errdetails.Help{Links: []*errdetails.Help_Link{{Description: "Request a higher quota limit.", Url: "https://cloud.google.com/docs/quotas/help/request_increase"}}},
		}}
	if retry > 0 {
		e.Details = append(e.Details, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
	}
	return e
}
