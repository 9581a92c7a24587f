package gcpfake

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/iam/admin/apiv1/adminpb"
	"cloud.google.com/go/iam/apiv1/iampb"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"cloud.google.com/go/resourcemanager/apiv3/resourcemanagerpb"
	container "google.golang.org/api/container/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Project is a project the fakes know.
type Project struct {
	ID     string
	Number string
}

// Behaviour is how the fakes fail where Google Cloud documents that it
// does. Every failure mode is on by default; tests and the emulator set the
// windows.
type Behaviour struct {
	// NewAccountWindow: for this long after CreateServiceAccount, IAM does
	// not see the account: reads of it and of its policy answer NOT_FOUND
	// or PERMISSION_DENIED (in turn), and a policy naming it as a member is
	// refused INVALID_ARGUMENT "Service account ... does not exist" (Google:
	// up to about 60 s). 0 turns it off.
	NewAccountWindow time.Duration
	// MaxPrincipals a policy may hold, every occurrence of a member
	// counted (Google: 1,500, of which 250 Google groups).
	MaxPrincipals int
	// IAMPropagation: a grant takes effect for the workloads that rely on
	// it (Authenticate, Allowed) this long after it is written (Google:
	// typically 2 minutes, sometimes 7 or more). 0: at once.
	IAMPropagation time.Duration
	// IngestionDelay: a sample written to Cloud Monitoring is queryable
	// this long after it was written.
	IngestionDelay time.Duration
}

// maxGroups is how many Google groups a policy may hold.
const maxGroups = 250

// DefaultBehaviour is what Start uses: every documented delay on.
var DefaultBehaviour = Behaviour{NewAccountWindow: 2 * time.Second, MaxPrincipals: 1500, IAMPropagation: 2 * time.Minute, IngestionDelay: 40 * time.Second}

// GCP is every fake, sharing one view of projects, accounts and policies.
type GCP struct {
	IAM        *IAM
	Projects   *Projects
	GKE        *Container
	Services   *ServiceUsage
	Monitoring *Monitoring
	Storage    *Storage

	// Endpoints for vllm-hpa's endpoints.* settings.
	IAMEndpoint, ResourceManagerEndpoint, ContainerEndpoint, ServiceUsageEndpoint, MonitoringEndpoint, StorageEndpoint string

	grpcServer *grpc.Server
	httpServer *httptest.Server

	mu        sync.Mutex
	behaviour Behaviour
	pools     map[string]bool // projects with a Workload Identity pool
	disabled  map[string]bool // PROJECT/SERVICE: services not enabled
	org       OrgPolicy
	perimeter map[string]bool // services behind a VPC-SC perimeter the caller is outside of
	throttled int             // calls still to answer RESOURCE_EXHAUSTED
	throttle  time.Duration   // the RetryInfo delay they ask for
}

// OrgPolicy are the organization policy constraints the fakes enforce.
type OrgPolicy struct {
	// DisableServiceAccountCreation: iam.disableServiceAccountCreation.
	DisableServiceAccountCreation bool
	// AllowedMember, if set, is iam.allowedPolicyMemberDomains: a policy
	// naming a member it refuses is refused.
	AllowedMember func(member string) bool
}

// Start serves the fakes on loopback for the given projects, with
// DefaultBehaviour.
func Start(projects ...Project) (*GCP, error) {
	g := &GCP{behaviour: DefaultBehaviour, pools: map[string]bool{}, disabled: map[string]bool{}, perimeter: map[string]bool{}}
	g.IAM = &IAM{g: g, accounts: map[string]*account{}, policies: newPolicyStore(), projects: map[string]bool{}}
	g.Projects = &Projects{g: g, projects: map[string]Project{}, policies: newPolicyStore()}
	g.GKE = &Container{g: g, clusters: map[string]*container.Cluster{}}
	g.Services = &ServiceUsage{g: g}
	g.Monitoring = newMonitoring(g)
	g.Storage = newStorage(g)
	for _, p := range projects {
		g.AddProject(p)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g.grpcServer = grpc.NewServer()
	adminpb.RegisterIAMServer(g.grpcServer, g.IAM)
	resourcemanagerpb.RegisterProjectsServer(g.grpcServer, g.Projects)
	monitoringpb.RegisterMetricServiceServer(g.grpcServer, g.Monitoring)
	go g.grpcServer.Serve(l)
	// "http://" tells vllm-hpa to dial plaintext without credentials.
	g.IAMEndpoint = "http://" + l.Addr().String()
	g.ResourceManagerEndpoint = g.IAMEndpoint
	g.MonitoringEndpoint = g.IAMEndpoint
	mux := http.NewServeMux()
	mux.Handle("/v1/projects/{project}/locations/{location}/clusters/{cluster}", g.GKE)
	mux.HandleFunc("/v1/projects/{project}/services/{service}", g.Services.get)
	mux.HandleFunc("/v1/projects/{project}/services:batchGet", g.Services.batchGet)
	mux.HandleFunc("GET /storage/v1/b/{bucket}", g.Storage.getBucket)
	mux.HandleFunc("GET /storage/v1/b/{bucket}/o", g.Storage.listObjects)
	mux.HandleFunc("GET /storage/v1/b/{bucket}/iam", g.Storage.getIamPolicy)
	mux.HandleFunc("PUT /storage/v1/b/{bucket}/iam", g.Storage.setIamPolicy)
	mux.HandleFunc("GET /storage/v1/b/{bucket}/iam/testPermissions", g.Storage.testIamPermissions)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		Plain(codes.NotFound, "the fake does not serve %s", r.URL.Path).WriteREST(w)
	})
	g.httpServer = httptest.NewServer(mux)
	g.ContainerEndpoint = g.httpServer.URL + "/"
	g.ServiceUsageEndpoint = g.httpServer.URL + "/"
	g.StorageEndpoint = g.httpServer.URL + "/storage/v1/"
	return g, nil
}

// Env points vllm-hpa's endpoints.* settings at the fakes.
func (g *GCP) Env() map[string]string {
	return map[string]string{
		"VLLM_HPA_ENDPOINTS_IAM":              g.IAMEndpoint,
		"VLLM_HPA_ENDPOINTS_RESOURCE_MANAGER": g.ResourceManagerEndpoint,
		"VLLM_HPA_ENDPOINTS_CONTAINER":        g.ContainerEndpoint,
		"VLLM_HPA_ENDPOINTS_SERVICE_USAGE":    g.ServiceUsageEndpoint,
		"VLLM_HPA_ENDPOINTS_MONITORING":       g.MonitoringEndpoint,
		"VLLM_HPA_ENDPOINTS_STORAGE":          g.StorageEndpoint,
	}
}

// EnvList is Env as KEY=VALUE entries, for a process's environment.
func (g *GCP) EnvList() []string {
	var out []string
	for k, v := range g.Env() {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// SetOrgPolicy sets the organization policy constraints in force.
func (g *GCP) SetOrgPolicy(p OrgPolicy) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.org = p
}

func (g *GCP) orgPolicy() OrgPolicy {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.org
}

// SetPerimeter puts service (e.g. iam.googleapis.com) behind a VPC Service
// Controls perimeter the caller is outside of (blocked), or not.
func (g *GCP) SetPerimeter(service string, blocked bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.perimeter[service] = blocked
}

// Throttle makes the next calls (of any API) answer RESOURCE_EXHAUSTED
// RATE_LIMIT_EXCEEDED, asking for retry (0: no RetryInfo).
func (g *GCP) Throttle(calls int, retry time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.throttled, g.throttle = calls, retry
}

// SetEnabled enables or disables service (e.g. monitoring.googleapis.com)
// on project: every fake refuses calls to a disabled API as Google does.
func (g *GCP) SetEnabled(project, service string, enabled bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.disabled[project+"/"+service] = !enabled
}

// Enabled reports whether service is enabled on project (id or number).
func (g *GCP) Enabled(project, service string) bool {
	if p, ok := g.Projects.byIDOrNumber(project); ok {
		project = p.ID
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.disabled[project+"/"+service]
}

// gate is what Google answers before it looks at a call to service for
// project at all: a VPC Service Controls perimeter, the API not enabled, a
// rate limit. nil lets the call through.
func (g *GCP) gate(service, project string) *GoogleError {
	p, known := g.Projects.byIDOrNumber(project)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.perimeter[service]:
		return PerimeterViolation(service, "vpcsc-"+strings.ReplaceAll(service, ".", "-")+"-violation", p.Number)
	case known && g.disabled[p.ID+"/"+service]:
		return ServiceDisabled(service, p.Number)
	case g.throttled > 0:
		g.throttled--
		return RateLimited(service, p.Number, g.throttle)
	}
	return nil
}

// projectOf is the project of a resource name projects/P/...
func projectOf(name string) string {
	rest, _ := strings.CutPrefix(name, "projects/")
	p, _, _ := strings.Cut(rest, "/")
	return p
}

// SetBehaviour changes how harsh the fakes are.
func (g *GCP) SetBehaviour(b Behaviour) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.behaviour = b
}

// Behaviour is what the fakes do now (SetBehaviour's last).
func (g *GCP) Behaviour() Behaviour { return g.current() }

func (g *GCP) current() Behaviour {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.behaviour
}

// AddProject makes a project known to the fakes.
func (g *GCP) AddProject(p Project) {
	g.Projects.mu.Lock()
	g.Projects.projects[p.ID] = p
	g.Projects.mu.Unlock()
	g.IAM.mu.Lock()
	g.IAM.projects[p.ID] = true
	g.IAM.mu.Unlock()
}

// SetWorkloadPool says whether the project has its Workload Identity pool
// (PROJECT.svc.id.goog), which exists once a cluster of the project has
// Workload Identity. PutCluster sets it from the cluster.
func (g *GCP) SetWorkloadPool(project string, exists bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pools[project] = exists
}

func (g *GCP) hasPool(project string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pools[project]
}

// Stop stops the servers.
func (g *GCP) Stop() {
	g.grpcServer.Stop()
	g.httpServer.Close()
}

// Mutations is the number of mutating calls all fakes received.
func (g *GCP) Mutations() int64 {
	return g.IAM.Counters.Mutations.Load() + g.Projects.Counters.Mutations.Load() + g.Storage.Counters.Mutations.Load()
}

// Reads is the number of reading calls all fakes received.
func (g *GCP) Reads() int64 {
	return g.IAM.Counters.Reads.Load() + g.Projects.Counters.Reads.Load() + g.GKE.Counters.Reads.Load() + g.Services.Counters.Reads.Load() + g.Monitoring.Counters.Reads.Load() + g.Storage.Counters.Reads.Load()
}

var (
	accountMember = regexp.MustCompile(`^serviceAccount:([^@\[]+@([a-z0-9-]+)\.iam\.gserviceaccount\.com)$`)
	ksaMember     = regexp.MustCompile(`^serviceAccount:([a-z0-9-]+)\.svc\.id\.goog\[[^/]+/[^\]]+\]$`)
	principal     = regexp.MustCompile(`^principal(Set)?://iam\.googleapis\.com/projects/[0-9]+/locations/global/workloadIdentityPools/([a-z0-9-]+)\.svc\.id\.goog/`)
)

// validate refuses a policy as IAM does: more principals than allowed, a
// service account that does not exist (or that IAM does not see yet), a
// Workload Identity member of a project without a pool.
func (g *GCP) validate(p *iampb.Policy) error {
	b := g.current()
	// Google counts every occurrence of a principal, and groups on their
	// own as well.
	members := map[string]bool{}
	occurrences, groups := 0, 0
	for _, bnd := range p.Bindings {
		for _, m := range bnd.Members {
			members[m] = true
			occurrences++
			if strings.HasPrefix(m, "group:") {
				groups++
			}
		}
	}
	if b.MaxPrincipals > 0 && occurrences > b.MaxPrincipals {
		return Plain(codes.InvalidArgument, "The number of members in the policy (%d) is larger than the maximum allowed size %d.", occurrences, b.MaxPrincipals).GRPC()
	}
	if groups > maxGroups {
		return Plain(codes.InvalidArgument, "The number of groups in the policy (%d) is larger than the maximum allowed size %d.", groups, maxGroups).GRPC()
	}
	org := g.orgPolicy()
	for m := range members {
		if org.AllowedMember != nil && !org.AllowedMember(m) {
			return OrgPolicyViolation("iam.allowedPolicyMemberDomains", "", "One or more users named in the policy do not belong to a permitted customer,  perhaps due to an organization policy.").GRPC()
		}
		if sm := accountMember.FindStringSubmatch(m); sm != nil {
			if !g.IAM.visible(sm[1]) {
				return Plain(codes.InvalidArgument, "Service account %s does not exist.", sm[1]).GRPC()
			}
			continue
		}
		pool := ""
		if sm := ksaMember.FindStringSubmatch(m); sm != nil {
			pool = sm[1]
		} else if sm := principal.FindStringSubmatch(m); sm != nil {
			pool = sm[2]
		}
		if pool != "" && !g.hasPool(pool) {
			return Plain(codes.InvalidArgument, "Identity Pool does not exist (%s.svc.id.goog). Please check that you specified a valid resource name as returned in the `name` attribute in the configuration API.", pool).GRPC()
		}
	}
	return nil
}

// --- IAM admin ------------------------------------------------------------

// account is a service account and when it was created.
type account struct {
	sa      *adminpb.ServiceAccount
	created time.Time
}

// IAM fakes the IAM admin API: service accounts and their IAM policies.
type IAM struct {
	adminpb.UnimplementedIAMServer
	Counters Counters
	// Faults, if set, may fail any call.
	Faults Faults
	// Denied, if set, makes calls on resources it returns true for fail
	// with PERMISSION_DENIED.
	Denied func(method, resource string) bool

	g        *GCP
	mu       sync.Mutex
	accounts map[string]*account // by email
	projects map[string]bool
	policies *policyStore
	nextID   int
	unseen   int // answers given for accounts IAM does not see yet
}

// iamPermissions are the permissions of the IAM admin API's methods.
var iamPermissions = map[string]string{
	"GetServiceAccount": "iam.serviceAccounts.get", "CreateServiceAccount": "iam.serviceAccounts.create",
	"PatchServiceAccount": "iam.serviceAccounts.update", "DeleteServiceAccount": "iam.serviceAccounts.delete",
	"GetIamPolicy": "iam.serviceAccounts.getIamPolicy", "SetIamPolicy": "iam.serviceAccounts.setIamPolicy",
}

func (f *IAM) check(method, resource string) error {
	if f.Faults != nil {
		if err := f.Faults(method); err != nil {
			return err
		}
	}
	if e := f.g.gate("iam.googleapis.com", projectOf(resource)); e != nil {
		return e.GRPC()
	}
	if f.Denied != nil && f.Denied(method, resource) {
		return PermissionDenied("iam.googleapis.com", iamPermissions[method], resource).GRPC()
	}
	return nil
}

// TestIamPermissions answers which of the iam.serviceAccounts.*
// permissions the caller holds on one account, by the Denied hook.
func (f *IAM) TestIamPermissions(ctx context.Context, req *iampb.TestIamPermissionsRequest) (*iampb.TestIamPermissionsResponse, error) {
	// testIamPermissions needs no permission of its own.
	if e := f.g.gate("iam.googleapis.com", projectOf(req.Resource)); e != nil {
		return nil, e.GRPC()
	}
	if _, err := f.lookup("getIamPolicy", req.Resource); err != nil {
		return nil, err
	}
	out := &iampb.TestIamPermissionsResponse{}
	for _, perm := range req.Permissions {
		method := permissionMethod(iamPermissions, perm)
		if method != "" && (f.Denied == nil || !f.Denied(method, req.Resource)) {
			out.Permissions = append(out.Permissions, perm)
		}
	}
	return out, nil
}

// permissionMethod is the method of methods that needs perm ("" if none).
func permissionMethod(methods map[string]string, perm string) string {
	for m, p := range methods {
		if p == perm {
			return m
		}
	}
	return ""
}

// holds reports whether the caller holds perm on project id, as the fakes
// would answer the calls that need it (their Denied hooks decide, asked
// of the project: a hook keyed on one account or cluster is not asked);
// known is false for a permission the fakes do not know.
func (g *GCP) holds(id, perm string) (held, known bool) {
	switch {
	case strings.HasPrefix(perm, "resourcemanager.projects."):
		m := map[string]string{"resourcemanager.projects.get": "GetProject", "resourcemanager.projects.getIamPolicy": "GetIamPolicy", "resourcemanager.projects.setIamPolicy": "SetIamPolicy"}[perm]
		return m != "" && (g.Projects.Denied == nil || !g.Projects.Denied(m, "projects/"+id)), m != ""
	case strings.HasPrefix(perm, "iam.serviceAccounts."):
		m := permissionMethod(iamPermissions, perm)
		return m != "" && (g.IAM.Denied == nil || !g.IAM.Denied(m, "projects/"+id)), m != ""
	case perm == "container.clusters.get":
		return g.GKE.Denied == nil || !g.GKE.Denied("projects/"+id), true
	case perm == "serviceusage.services.get":
		return g.Services.Denied == nil || !g.Services.Denied(id), true
	}
	return false, false
}

// accountEmail takes projects/P/serviceAccounts/EMAIL (or projects/-/...).
func accountEmail(name string) string {
	i := strings.LastIndex(name, "/")
	return name[i+1:]
}

// lookup finds the account of a resource name as IAM sees it: a new
// account is not seen during the window, answered in turn NOT_FOUND and
// PERMISSION_DENIED, as IAM answers.
func (f *IAM) lookup(method, name string) (*account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[accountEmail(name)]
	if !ok {
		return nil, Plain(codes.NotFound, "Unknown service account %s", name).GRPC()
	}
	if time.Since(a.created) < f.g.current().NewAccountWindow {
		f.unseen++
		if f.unseen%2 == 0 {
			return nil, PermissionDenied("iam.googleapis.com", "iam.serviceAccounts."+method, "").GRPC()
		}
		return nil, Plain(codes.NotFound, "Unknown service account %s", name).GRPC()
	}
	return a, nil
}

// visible reports whether IAM sees the account with email.
func (f *IAM) visible(email string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[email]
	return ok && time.Since(a.created) >= f.g.current().NewAccountWindow
}

func (f *IAM) GetServiceAccount(ctx context.Context, req *adminpb.GetServiceAccountRequest) (*adminpb.ServiceAccount, error) {
	f.Counters.Reads.Add(1)
	if err := f.check("GetServiceAccount", req.Name); err != nil {
		return nil, err
	}
	a, err := f.lookup("get", req.Name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return cloneAccount(a.sa), nil
}

func (f *IAM) CreateServiceAccount(ctx context.Context, req *adminpb.CreateServiceAccountRequest) (*adminpb.ServiceAccount, error) {
	f.Counters.Mutations.Add(1)
	if err := f.check("CreateServiceAccount", req.Name); err != nil {
		return nil, err
	}
	project := strings.TrimPrefix(req.Name, "projects/")
	if f.g.orgPolicy().DisableServiceAccountCreation {
		return nil, OrgPolicyViolation("iam.disableServiceAccountCreation", "projects/"+project+"/serviceAccounts/?configvalue=", "Service account creation is not allowed on this project.").GRPC()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.projects[project] {
		return nil, Plain(codes.NotFound, "Project %s not found or deleted.", project).GRPC()
	}
	email := fmt.Sprintf("%s@%s.iam.gserviceaccount.com", req.AccountId, project)
	if _, ok := f.accounts[email]; ok {
		return nil, Plain(codes.AlreadyExists, "Service account %s already exists within project %s.", req.AccountId, req.Name).GRPC()
	}
	if req.ServiceAccount != nil && len(req.ServiceAccount.Description) > maxDescription {
		return nil, Plain(codes.InvalidArgument, "Description is too long: %d bytes, at most %d", len(req.ServiceAccount.Description), maxDescription).GRPC()
	}
	f.nextID++
	sa := &adminpb.ServiceAccount{
		Name: "projects/" + project + "/serviceAccounts/" + email, ProjectId: project, Email: email,
		UniqueId: fmt.Sprintf("1000%06d", f.nextID),
	}
	if req.ServiceAccount != nil {
		sa.DisplayName, sa.Description = req.ServiceAccount.DisplayName, req.ServiceAccount.Description
	}
	f.accounts[email] = &account{sa: sa, created: time.Now()}
	// A new account has a policy of its own, empty, whatever an earlier
	// account of the same email had.
	f.policies.delete(email)
	return cloneAccount(sa), nil
}

// PatchServiceAccount changes the display name and description, as IAM
// does; the description is at most 256 bytes.
func (f *IAM) PatchServiceAccount(ctx context.Context, req *adminpb.PatchServiceAccountRequest) (*adminpb.ServiceAccount, error) {
	f.Counters.Mutations.Add(1)
	sa := req.GetServiceAccount()
	if err := f.check("PatchServiceAccount", sa.GetName()); err != nil {
		return nil, err
	}
	a, err := f.lookup("update", sa.GetName())
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range req.GetUpdateMask().GetPaths() {
		switch p {
		case "description":
			if len(sa.Description) > maxDescription {
				return nil, Plain(codes.InvalidArgument, "Description is too long: %d bytes, at most %d", len(sa.Description), maxDescription).GRPC()
			}
			a.sa.Description = sa.Description
		case "display_name":
			if len(sa.DisplayName) > 100 {
				return nil, Plain(codes.InvalidArgument, "Display name is too long").GRPC()
			}
			a.sa.DisplayName = sa.DisplayName
		default:
			return nil, Plain(codes.InvalidArgument, "Invalid update mask path %q", p).GRPC()
		}
	}
	return cloneAccount(a.sa), nil
}

// maxDescription is IAM's limit on a service account's description.
const maxDescription = 256

// DeleteServiceAccount deletes the account; as in IAM, every policy that
// names it keeps the member, rewritten deleted:serviceAccount:EMAIL?uid=N.
func (f *IAM) DeleteServiceAccount(ctx context.Context, req *adminpb.DeleteServiceAccountRequest) (*emptypb.Empty, error) {
	f.Counters.Mutations.Add(1)
	if err := f.check("DeleteServiceAccount", req.Name); err != nil {
		return nil, err
	}
	a, err := f.lookup("delete", req.Name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	email := accountEmail(req.Name)
	delete(f.accounts, email)
	f.mu.Unlock()
	from, to := "serviceAccount:"+email, fmt.Sprintf("deleted:serviceAccount:%s?uid=%s", email, a.sa.UniqueId)
	f.policies.rename(from, to)
	f.g.Projects.policies.rename(from, to)
	f.policies.delete(email)
	return &emptypb.Empty{}, nil
}

func (f *IAM) GetIamPolicy(ctx context.Context, req *iampb.GetIamPolicyRequest) (*iampb.Policy, error) {
	f.Counters.Reads.Add(1)
	if err := f.check("GetIamPolicy", req.Resource); err != nil {
		return nil, err
	}
	if _, err := f.lookup("getIamPolicy", req.Resource); err != nil {
		return nil, err
	}
	return f.policies.get(accountEmail(req.Resource), req.GetOptions().GetRequestedPolicyVersion()), nil
}

func (f *IAM) SetIamPolicy(ctx context.Context, req *iampb.SetIamPolicyRequest) (*iampb.Policy, error) {
	f.Counters.Mutations.Add(1)
	if err := f.check("SetIamPolicy", req.Resource); err != nil {
		return nil, err
	}
	if _, err := f.lookup("setIamPolicy", req.Resource); err != nil {
		return nil, err
	}
	if err := f.g.validate(req.Policy); err != nil {
		return nil, err
	}
	p, err := f.policies.set(accountEmail(req.Resource), req.Policy)
	if status.Code(err) == codes.Aborted {
		f.Counters.Aborted.Add(1)
	}
	return p, err
}

// Account returns a copy of the account with email, or nil.
func (f *IAM) Account(email string) *adminpb.ServiceAccount {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.accounts[email]; ok {
		return cloneAccount(a.sa)
	}
	return nil
}

// PutAccount creates an account directly, seen at once (test setup: one
// vllm-hpa did not create).
func (f *IAM) PutAccount(project, id, displayName, description string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	email := fmt.Sprintf("%s@%s.iam.gserviceaccount.com", id, project)
	f.accounts[email] = &account{sa: &adminpb.ServiceAccount{Name: "projects/" + project + "/serviceAccounts/" + email, ProjectId: project, Email: email,
		DisplayName: displayName, Description: description, UniqueId: fmt.Sprintf("1000%06d", f.nextID)}}
}

// SetDisabled disables (or enables) the account with email: it exists, but
// cannot authenticate.
func (f *IAM) SetDisabled(email string, disabled bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.accounts[email]; ok {
		a.sa.Disabled = disabled
	}
}

// AccountPolicy returns the IAM policy of the account with email.
func (f *IAM) AccountPolicy(email string) *iampb.Policy { return f.policies.Policy(email) }

func cloneAccount(a *adminpb.ServiceAccount) *adminpb.ServiceAccount {
	return proto.Clone(a).(*adminpb.ServiceAccount)
}

// --- Resource Manager -----------------------------------------------------

// Projects fakes the Resource Manager v3 Projects API.
type Projects struct {
	resourcemanagerpb.UnimplementedProjectsServer
	Counters Counters
	Faults   Faults
	Denied   func(method, resource string) bool

	g        *GCP
	mu       sync.Mutex
	projects map[string]Project
	policies *policyStore
}

// byIDOrNumber finds a project by its id or its number.
func (f *Projects) byIDOrNumber(s string) (Project, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.projects[s]; ok {
		return p, true
	}
	for _, p := range f.projects {
		if p.Number == s {
			return p, true
		}
	}
	return Project{}, false
}

func (f *Projects) lookup(method, name string) (Project, error) {
	if f.Faults != nil {
		if err := f.Faults(method); err != nil {
			return Project{}, err
		}
	}
	id := strings.TrimPrefix(name, "projects/")
	if e := f.g.gate("cloudresourcemanager.googleapis.com", id); e != nil {
		return Project{}, e.GRPC()
	}
	p, ok := f.byIDOrNumber(id)
	// GCP answers 403 alike for a project that does not exist and one the
	// caller may not see, so that existence does not leak.
	if !ok || f.Denied != nil && f.Denied(method, name) {
		perm := map[string]string{"GetProject": "get", "GetIamPolicy": "getIamPolicy", "SetIamPolicy": "setIamPolicy"}[method]
		return Project{}, PermissionDenied("cloudresourcemanager.googleapis.com", "resourcemanager.projects."+perm, "//cloudresourcemanager.googleapis.com/"+name).GRPC()
	}
	return p, nil
}

func (f *Projects) GetProject(ctx context.Context, req *resourcemanagerpb.GetProjectRequest) (*resourcemanagerpb.Project, error) {
	f.Counters.Reads.Add(1)
	p, err := f.lookup("GetProject", req.Name)
	if err != nil {
		return nil, err
	}
	return &resourcemanagerpb.Project{Name: "projects/" + p.Number, ProjectId: p.ID, State: resourcemanagerpb.Project_ACTIVE}, nil
}

// TestIamPermissions answers, as Resource Manager does, which of the
// permissions the caller holds on the project: each one the fakes would
// refuse (their Denied hooks, by the method that needs it) is left out;
// a project the caller may not see at all is PERMISSION_DENIED.
func (f *Projects) TestIamPermissions(ctx context.Context, req *iampb.TestIamPermissionsRequest) (*iampb.TestIamPermissionsResponse, error) {
	f.Counters.Reads.Add(1)
	p, err := f.lookup("GetProject", req.Resource)
	if err != nil {
		return nil, err
	}
	if len(req.Permissions) > 100 {
		return nil, Plain(codes.InvalidArgument, "at most 100 permissions may be tested at once").GRPC()
	}
	out := &iampb.TestIamPermissionsResponse{}
	for _, perm := range req.Permissions {
		held, known := f.g.holds(p.ID, perm)
		if !known {
			// As Resource Manager answers a permission that does not
			// exist (or cannot be granted on a project).
			return nil, Plain(codes.InvalidArgument, "Permission %s is not valid for this resource.", perm).GRPC()
		}
		if held {
			out.Permissions = append(out.Permissions, perm)
		}
	}
	return out, nil
}

func (f *Projects) GetIamPolicy(ctx context.Context, req *iampb.GetIamPolicyRequest) (*iampb.Policy, error) {
	f.Counters.Reads.Add(1)
	p, err := f.lookup("GetIamPolicy", req.Resource)
	if err != nil {
		return nil, err
	}
	return f.policies.get(p.ID, req.GetOptions().GetRequestedPolicyVersion()), nil
}

func (f *Projects) SetIamPolicy(ctx context.Context, req *iampb.SetIamPolicyRequest) (*iampb.Policy, error) {
	f.Counters.Mutations.Add(1)
	p, err := f.lookup("SetIamPolicy", req.Resource)
	if err != nil {
		return nil, err
	}
	if err := f.g.validate(req.Policy); err != nil {
		return nil, err
	}
	out, err := f.policies.set(p.ID, req.Policy)
	if status.Code(err) == codes.Aborted {
		f.Counters.Aborted.Add(1)
	}
	return out, err
}

// Policy returns the project's IAM policy (version 3).
func (f *Projects) Policy(projectID string) *iampb.Policy { return f.policies.Policy(projectID) }

// SetPolicy replaces the project's policy (test setup).
func (f *Projects) SetPolicy(projectID string, p *iampb.Policy) { f.policies.SetPolicy(projectID, p) }

// Writer is what a foreign writer uses: an etag-guarded read-modify-write
// of the project policy by a writer other than vllm-hpa.
func (f *Projects) Writer(projectID string) (get func() *iampb.Policy, set func(*iampb.Policy) error) {
	return func() *iampb.Policy { return f.policies.get(projectID, 3) },
		func(p *iampb.Policy) error {
			_, err := f.policies.set(projectID, p)
			if status.Code(err) == codes.Aborted {
				f.Counters.Aborted.Add(1)
			}
			return err
		}
}

// --- container ------------------------------------------------------------

// Container fakes the container API's clusters.get.
type Container struct {
	Counters Counters
	// Denied, if set, refuses the caller on the clusters (by resource
	// name) it returns true for: container.clusters.get.
	Denied func(name string) bool

	g        *GCP
	mu       sync.Mutex
	clusters map[string]*container.Cluster // by projects/P/locations/L/clusters/C
}

// PutCluster sets what clusters.get returns for name; a cluster with
// Workload Identity makes its project's pool exist.
func (f *Container) PutCluster(name string, c *container.Cluster) {
	f.mu.Lock()
	f.clusters[name] = c
	f.mu.Unlock()
	if wi := c.WorkloadIdentityConfig; wi != nil && strings.HasSuffix(wi.WorkloadPool, ".svc.id.goog") {
		f.g.SetWorkloadPool(strings.TrimSuffix(wi.WorkloadPool, ".svc.id.goog"), true)
	}
}

func (f *Container) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		f.Counters.Mutations.Add(1)
		Plain(codes.Unimplemented, "not implemented by the fake").WriteREST(w)
		return
	}
	f.Counters.Reads.Add(1)
	name := strings.TrimPrefix(r.URL.Path, "/v1/")
	if e := f.g.gate("container.googleapis.com", r.PathValue("project")); e != nil {
		e.WriteREST(w)
		return
	}
	if f.Denied != nil && f.Denied(name) {
		PermissionDenied("container.googleapis.com", "container.clusters.get", name).WriteREST(w)
		return
	}
	f.mu.Lock()
	c, ok := f.clusters[name]
	f.mu.Unlock()
	if !ok {
		Plain(codes.NotFound, "Not found: %s.", name).WriteREST(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(c)
}

// --- Service Usage ----------------------------------------------------------

// ServiceUsage fakes the Service Usage API's services.get and
// services.batchGet: a service is enabled unless GCP.SetEnabled says
// otherwise.
type ServiceUsage struct {
	Counters Counters
	// Denied, if set, refuses the caller on the projects it returns true
	// for (a caller without serviceusage.services.get).
	Denied func(project string) bool

	g *GCP
}

// SetEnabled enables or disables a service on a project (GCP.SetEnabled).
func (f *ServiceUsage) SetEnabled(project, service string, enabled bool) {
	f.g.SetEnabled(project, service, enabled)
}

// project reads the request's project as Service Usage does: refused for
// a caller without the permission (or a project that does not exist).
func (f *ServiceUsage) project(w http.ResponseWriter, r *http.Request) (Project, bool) {
	f.Counters.Reads.Add(1)
	id := r.PathValue("project")
	if e := f.g.gate("serviceusage.googleapis.com", id); e != nil {
		e.WriteREST(w)
		return Project{}, false
	}
	p, ok := f.g.Projects.byIDOrNumber(id)
	if !ok || f.Denied != nil && f.Denied(p.ID) {
		PermissionDenied("serviceusage.googleapis.com", "serviceusage.services.get", "projects/"+id).WriteREST(w)
		return Project{}, false
	}
	return p, true
}

// service is how Service Usage describes service on p.
func (f *ServiceUsage) service(p Project, service string) map[string]any {
	state := "ENABLED"
	if !f.g.Enabled(p.ID, service) {
		state = "DISABLED"
	}
	return map[string]any{
		"name": "projects/" + p.Number + "/services/" + service, "parent": "projects/" + p.Number, "state": state,
		"config": map[string]any{"name": service, "title": ServiceTitles[service]},
	}
}

func (f *ServiceUsage) get(w http.ResponseWriter, r *http.Request) {
	p, ok := f.project(w, r)
	if !ok {
		return
	}
	writeJSON(w, f.service(p, r.PathValue("service")))
}

// maxBatchGet is how many services one batchGet may name.
const maxBatchGet = 30

func (f *ServiceUsage) batchGet(w http.ResponseWriter, r *http.Request) {
	p, ok := f.project(w, r)
	if !ok {
		return
	}
	names := r.URL.Query()["names"]
	if len(names) == 0 || len(names) > maxBatchGet {
		Plain(codes.InvalidArgument, "A single request can get a maximum of %d services at a time; %d were requested.", maxBatchGet, len(names)).WriteREST(w)
		return
	}
	var services []any
	for _, n := range names {
		parent, service, ok := strings.Cut(n, "/services/")
		if !ok || parent != "projects/"+r.PathValue("project") {
			Plain(codes.InvalidArgument, "Invalid service name %q: it must be of the parent %s.", n, "projects/"+r.PathValue("project")).WriteREST(w)
			return
		}
		services = append(services, f.service(p, service))
	}
	writeJSON(w, map[string]any{"services": services})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	json.NewEncoder(w).Encode(v)
}
