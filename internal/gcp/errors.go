package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/api/googleapi"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
)

// The google.rpc.ErrorInfo reasons vllm-hpa acts on (google/api/
// error_reason.proto, and IAM's IAM_PERMISSION_DENIED).
const (
	ReasonServiceDisabled         = "SERVICE_DISABLED"
	ReasonIAMPermissionDenied     = "IAM_PERMISSION_DENIED"
	ReasonSecurityPolicyViolated  = "SECURITY_POLICY_VIOLATED"
	ReasonRateLimitExceeded       = "RATE_LIMIT_EXCEEDED"
	ReasonResourceQuotaExceeded   = "RESOURCE_QUOTA_EXCEEDED"
	ReasonBillingDisabled         = "BILLING_DISABLED"
	ReasonUserProjectDenied       = "USER_PROJECT_DENIED"
	ReasonScopeInsufficient       = "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
	ReasonAccessTokenExpired      = "ACCESS_TOKEN_EXPIRED"
	ReasonCredentialsMissing      = "CREDENTIALS_MISSING"
	ReasonCustomOrgPolicy         = "CUSTOM_ORG_POLICY_VIOLATION"
	ReasonConsumerInvalid         = "CONSUMER_INVALID"
	violationVPCServiceControls   = "VPC_SERVICE_CONTROLS"
	violationConstraintPrefix     = "constraints/"
	legacyAccessNotConfigured     = "accessNotConfigured"
	legacyRateLimitExceeded       = "rateLimitExceeded"
	legacyUserRateLimitExceeded   = "userRateLimitExceeded"
	legacyInsufficientPermissions = "insufficientPermissions"
)

// Violation is one google.rpc.PreconditionFailure violation: an org policy
// constraint ("constraints/iam.disableServiceAccountCreation") or a VPC
// Service Controls perimeter ("VPC_SERVICE_CONTROLS").
type Violation struct {
	Type, Subject, Description string
}

// Details are what a Google API error says of itself, read the same way
// from gRPC and REST: its canonical code, the google.rpc.ErrorInfo, the
// precondition violations, how long to wait before a retry, and the legacy
// REST reasons (error.errors[].reason).
type Details struct {
	Code       codes.Code
	HTTPStatus int // 0 for gRPC
	Message    string
	Reason     string
	Domain     string
	Metadata   map[string]string
	Violations []Violation
	RetryDelay time.Duration
	Legacy     []string
}

// DetailsOf reads err as a Google API error; false when it is none.
//
// gax-go's apierror reads gRPC statuses and REST bodies alike, but it
// parses a REST body strictly: one field it does not know (the legacy
// "errors" array Google still sends beside "details") loses every detail,
// and it derives the code from the HTTP status alone (a 400
// FAILED_PRECONDITION reads as INVALID_ARGUMENT). So the REST body is read
// again, leniently, for what gax-go could not.
func DetailsOf(err error) (Details, bool) {
	if err == nil {
		return Details{}, false
	}
	ae, ok := apierror.FromError(err)
	if !ok {
		return Details{}, false
	}
	d := Details{Code: ae.GRPCStatus().Code(), Message: ae.Message()}
	if h := ae.HTTPCode(); h > 0 {
		d.HTTPStatus = h
	}
	ed := ae.Details()
	var ge *googleapi.Error
	rest := errors.As(err, &ge)
	if rest {
		if ge.Code > 0 {
			// gax-go leaves it out when it cannot parse the body.
			d.HTTPStatus = ge.Code
		}
		lenient := restDetails(ge)
		if lenient.status != "" {
			if c, ok := codeByName[lenient.status]; ok {
				d.Code = c
			}
		}
		if ed.ErrorInfo == nil {
			ed.ErrorInfo = lenient.info
		}
		if ed.PreconditionFailure == nil {
			ed.PreconditionFailure = lenient.precondition
		}
		if ed.RetryInfo == nil {
			ed.RetryInfo = lenient.retry
		}
		for _, e := range ge.Errors {
			d.Legacy = append(d.Legacy, e.Reason)
		}
		if ge.Message != "" {
			d.Message = ge.Message
		}
	}
	if ei := ed.ErrorInfo; ei != nil {
		d.Reason, d.Domain, d.Metadata = ei.GetReason(), ei.GetDomain(), ei.GetMetadata()
	}
	for _, v := range ed.PreconditionFailure.GetViolations() {
		d.Violations = append(d.Violations, Violation{Type: v.GetType(), Subject: v.GetSubject(), Description: v.GetDescription()})
	}
	if r := ed.RetryInfo; r != nil && r.GetRetryDelay() != nil {
		d.RetryDelay = r.GetRetryDelay().AsDuration()
	}
	return d, true
}

// codeByName maps the canonical names a REST body's "status" carries.
var codeByName = func() map[string]codes.Code {
	m := map[string]codes.Code{}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		m[strings.ToUpper(codeSnake(c))] = c
	}
	return m
}()

// codeSnake is code's canonical name, e.g. FAILED_PRECONDITION.
func codeSnake(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	s := strings.ToUpper(b.String())
	if c == codes.OK {
		return "OK"
	}
	return s
}

type restBody struct {
	status       string
	info         *errdetails.ErrorInfo
	precondition *errdetails.PreconditionFailure
	retry        *errdetails.RetryInfo
}

// restDetails reads a REST error body leniently: the canonical status
// string and each detail by its @type, unknown fields skipped.
func restDetails(ge *googleapi.Error) restBody {
	var out restBody
	var body struct {
		Error struct {
			Status string `json:"status"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(ge.Body), &body) == nil {
		out.status = body.Error.Status
	}
	lenient := protojson.UnmarshalOptions{DiscardUnknown: true}
	for _, raw := range ge.Details {
		m, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		t, _ := m["@type"].(string)
		var into proto.Message
		switch t {
		case "type.googleapis.com/google.rpc.ErrorInfo":
			out.info = &errdetails.ErrorInfo{}
			into = out.info
		case "type.googleapis.com/google.rpc.PreconditionFailure":
			out.precondition = &errdetails.PreconditionFailure{}
			into = out.precondition
		case "type.googleapis.com/google.rpc.RetryInfo":
			out.retry = &errdetails.RetryInfo{}
			into = out.retry
		default:
			continue
		}
		fields := maps.Clone(m) // the error's own details stay as they are
		delete(fields, "@type")
		b, err := json.Marshal(fields)
		if err == nil {
			_ = lenient.Unmarshal(b, into)
		}
	}
	return out
}

// Retryable reports whether a call that failed with err may succeed if
// made again: a stale etag (ABORTED), the service busy or unreachable
// (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, any 5xx), or a rate or quota
// limit (RESOURCE_EXHAUSTED, 429, a legacy rateLimitExceeded) that is not
// a quota of zero.
func Retryable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	d, ok := DetailsOf(err)
	if !ok {
		return false
	}
	for _, l := range d.Legacy {
		if l == legacyRateLimitExceeded || l == legacyUserRateLimitExceeded {
			return true
		}
	}
	if d.Metadata["quota_limit_value"] == "0" {
		return false // no quota at all: waiting will not grant one
	}
	if d.HTTPStatus == 501 || d.Code == codes.Unimplemented {
		return false
	}
	if d.HTTPStatus >= 500 || d.HTTPStatus == 429 {
		return true
	}
	switch d.Code {
	case codes.Aborted, codes.Unavailable, codes.DeadlineExceeded, codes.Internal:
		return true
	case codes.ResourceExhausted:
		return true
	}
	return false
}

// ServiceDisabledError is an API that is not enabled on the project a
// call was made for.
type ServiceDisabledError struct {
	Service  string // e.g. iam.googleapis.com; "" when Google did not say
	Consumer string // e.g. projects/123456789012
	Message  string
}

func (e *ServiceDisabledError) Error() string {
	if e.Service == "" {
		return "an API this call needs is not enabled on the project (" + e.Message + ")"
	}
	return fmt.Sprintf("the %s API is not enabled on %s: enable it with: gcloud services enable %s --project %s", e.Service, e.Consumer, e.Service, strings.TrimPrefix(e.Consumer, "projects/"))
}

// OrgPolicyError is a call refused by an organization policy constraint.
type OrgPolicyError struct {
	Constraint string // e.g. constraints/iam.disableServiceAccountCreation
	Message    string
}

func (e *OrgPolicyError) Error() string {
	msg := fmt.Sprintf("refused by the organization policy constraint %s (%s)", e.Constraint, e.Message)
	switch strings.TrimPrefix(e.Constraint, violationConstraintPrefix) {
	case "iam.disableServiceAccountCreation":
		return msg + ": the organization forbids new service accounts here; --identity-mode direct needs none (it grants roles/monitoring.viewer to the adapter's Kubernetes service account itself), or ask an organization policy administrator for an exception on this project"
	case "iam.allowedPolicyMemberDomains", "iam.managed.allowedPolicyMembers":
		return msg + ": the organization allows only members of its own domains in IAM policies; ask an organization policy administrator to allow the member (Workload Identity principals are of the project's own pool), or grant to an allowed one"
	}
	return msg + ": ask an organization policy administrator for an exception on this project"
}

// PerimeterError is a call blocked by a VPC Service Controls perimeter.
type PerimeterError struct {
	Service, UniqueID, Message string
}

func (e *PerimeterError) Error() string {
	s := e.Service
	if s == "" {
		s = "the API"
	}
	return fmt.Sprintf("blocked by a VPC Service Controls perimeter around %s (vpcServiceControlsUniqueIdentifier: %s): run from inside the perimeter (for example a host in its VPC), or ask its administrator for an ingress rule for this caller; the identifier finds the violation in the audit logs", s, e.UniqueID)
}

// rolesFor suggests, for a permission Google says the caller lacks, a
// predefined role that holds it.
var rolesFor = []struct{ prefix, role string }{
	{"iam.serviceAccounts.getAccessToken", "roles/iam.serviceAccountTokenCreator"},
	{"iam.serviceAccounts.", "roles/iam.serviceAccountAdmin"},
	{"resourcemanager.projects.getIamPolicy", "roles/resourcemanager.projectIamAdmin (or roles/iam.securityReviewer to read only)"},
	{"resourcemanager.projects.setIamPolicy", "roles/resourcemanager.projectIamAdmin"},
	{"resourcemanager.projects.get", "roles/browser"},
	{"container.clusters.", "roles/container.clusterViewer"},
	{"serviceusage.services.", "roles/serviceusage.serviceUsageViewer"},
	{"monitoring.", "roles/monitoring.viewer"},
}

// RoleFor is a predefined role that grants permission ("" when unknown).
func RoleFor(permission string) string {
	for _, r := range rolesFor {
		if strings.HasPrefix(permission, r.prefix) {
			return r.role
		}
	}
	return ""
}

// Classify gives a Google API error its exit code and a message that says
// what to do, by what Google says of it (google.rpc.ErrorInfo, the
// precondition violations, the canonical code), never by its message:
//   - an API not enabled, an org policy constraint, a VPC Service Controls
//     perimeter, billing off, a project that does not exist: exit 5, with
//     the fix;
//   - a missing permission (IAM_PERMISSION_DENIED), credentials without
//     the scope, a quota project the caller may not use, any other 403:
//     exit 6, naming the permission and a role when Google names them;
//   - NOT_FOUND of what must exist: exit 5;
//   - anything else keeps its error (exit 1), Google's message included.
func Classify(err error, what string) error {
	if err == nil {
		return nil
	}
	if exitcode.Of(err) != exitcode.Failure {
		// Already classified (e.g. a wait for IAM that ran out).
		return fmt.Errorf("%s: %w", what, err)
	}
	d, ok := DetailsOf(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	wrap := func(code int, e error) error { return exitcode.With(code, fmt.Errorf("%s: %w", what, e)) }
	for _, v := range d.Violations {
		switch {
		case v.Type == violationVPCServiceControls:
			return wrap(exitcode.Precondition, &PerimeterError{Service: d.Metadata["service"], UniqueID: v.Description, Message: d.Message})
		case strings.HasPrefix(v.Type, violationConstraintPrefix):
			return wrap(exitcode.Precondition, &OrgPolicyError{Constraint: v.Type, Message: d.Message})
		}
	}
	switch d.Reason {
	case ReasonServiceDisabled:
		return wrap(exitcode.Precondition, &ServiceDisabledError{Service: d.Metadata["service"], Consumer: d.Metadata["consumer"], Message: d.Message})
	case ReasonSecurityPolicyViolated:
		return wrap(exitcode.Precondition, &PerimeterError{Service: d.Metadata["service"], UniqueID: d.Metadata["uid"], Message: d.Message})
	case ReasonCustomOrgPolicy:
		constraint := d.Metadata["customConstraints"]
		if constraint == "" {
			constraint = "(a managed constraint Google did not name)"
		}
		return wrap(exitcode.Precondition, &OrgPolicyError{Constraint: constraint, Message: d.Message})
	case ReasonBillingDisabled:
		return wrap(exitcode.Precondition, fmt.Errorf("billing is not enabled on %s, which %s needs: link a billing account (gcloud billing projects link %s --billing-account ACCOUNT)", d.Metadata["consumer"], d.Metadata["service"], strings.TrimPrefix(d.Metadata["consumer"], "projects/")))
	case ReasonConsumerInvalid:
		return wrap(exitcode.Precondition, fmt.Errorf("the project does not exist or the caller cannot see it (%s): check --project", d.Message))
	case ReasonIAMPermissionDenied:
		// Google answers so alike for a resource that does not exist.
		perm := d.Metadata["permission"]
		msg := "permission denied: the caller lacks " + perm
		if r := d.Metadata["resource"]; r != "" {
			msg += " on " + r + ", or it does not exist (Google does not tell them apart"
			if isProject(r) {
				msg += ": check that --project names a project that exists"
			}
			msg += ")"
		}
		if role := RoleFor(perm); role != "" {
			msg += "; grant the caller a role that holds it, e.g. " + role
		}
		if perm == "" {
			msg = "permission denied: " + d.Message
		}
		return wrap(exitcode.Denied, errors.New(msg))
	case ReasonScopeInsufficient, ReasonAccessTokenExpired, ReasonCredentialsMissing:
		return wrap(exitcode.Denied, fmt.Errorf("the credentials were refused (%s: %s): run `gcloud auth application-default login`, or give credentials with the cloud-platform scope", d.Reason, d.Message))
	case ReasonUserProjectDenied:
		return wrap(exitcode.Denied, fmt.Errorf("the caller may not use the quota project %s (%s): grant it roles/serviceusage.serviceUsageConsumer there, or set another quota project (gcloud auth application-default set-quota-project)", d.Metadata["consumer"], d.Message))
	case ReasonRateLimitExceeded, ReasonResourceQuotaExceeded:
		if d.Metadata["quota_limit_value"] == "0" {
			return wrap(exitcode.Precondition, fmt.Errorf("the project has no quota for this call (quota metric %s, limit %s = 0): ask for quota, https://cloud.google.com/docs/quotas/help/request_increase", d.Metadata["quota_metric"], d.Metadata["quota_limit"]))
		}
		return wrap(exitcode.Failure, fmt.Errorf("quota exceeded: %s (quota metric %s, limit %s = %s): re-run later, or ask for a higher quota", d.Message, d.Metadata["quota_metric"], d.Metadata["quota_limit"], d.Metadata["quota_limit_value"]))
	}
	for _, l := range d.Legacy {
		switch l {
		case legacyAccessNotConfigured:
			return wrap(exitcode.Precondition, &ServiceDisabledError{Message: d.Message})
		case legacyInsufficientPermissions:
			return wrap(exitcode.Denied, fmt.Errorf("the credentials were refused (insufficient scopes: %s): run `gcloud auth application-default login`", d.Message))
		}
	}
	switch d.Code {
	case codes.PermissionDenied:
		// No reason given: Google answers so alike for a project that
		// does not exist and one the caller may not see.
		return wrap(exitcode.Denied, fmt.Errorf("permission denied: %s (check that --project names a project that exists, and that the caller may make this call)", d.Message))
	case codes.Unauthenticated:
		return wrap(exitcode.Denied, fmt.Errorf("the credentials were refused: %s: run `gcloud auth application-default login`, or check GOOGLE_APPLICATION_CREDENTIALS", d.Message))
	case codes.NotFound:
		return wrap(exitcode.Precondition, fmt.Errorf("not found: %s", d.Message))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isProject reports whether a resource name is a project itself
// (projects/P, or //cloudresourcemanager.googleapis.com/projects/P).
func isProject(resource string) bool {
	_, rest, ok := strings.Cut(resource, "projects/")
	return ok && !strings.Contains(rest, "/")
}

// As finds the typed cause (*ServiceDisabledError, *OrgPolicyError,
// *PerimeterError) of a classified error.
func As[T error](err error) (T, bool) {
	var t T
	ok := errors.As(err, &t)
	return t, ok
}
