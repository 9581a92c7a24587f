package gcpfake

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"cloud.google.com/go/iam/admin/apiv1/adminpb"
	"cloud.google.com/go/iam/apiv1/iampb"
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

// GCP is every fake, sharing one view of projects and permissions.
type GCP struct {
	IAM      *IAM
	Projects *Projects
	GKE      *Container

	// Endpoints for vllm-hpa's endpoints.* settings.
	IAMEndpoint, ResourceManagerEndpoint, ContainerEndpoint string

	grpcServer *grpc.Server
	httpServer *httptest.Server
}

// Start serves the fakes on loopback for the given projects.
func Start(projects ...Project) (*GCP, error) {
	g := &GCP{
		IAM:      &IAM{accounts: map[string]*adminpb.ServiceAccount{}, policies: newPolicyStore(), projects: map[string]bool{}},
		Projects: &Projects{projects: map[string]Project{}, policies: newPolicyStore()},
		GKE:      &Container{clusters: map[string]*container.Cluster{}},
	}
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
	go g.grpcServer.Serve(l)
	// "http://" tells vllm-hpa to dial plaintext without credentials.
	g.IAMEndpoint = "http://" + l.Addr().String()
	g.ResourceManagerEndpoint = g.IAMEndpoint
	g.httpServer = httptest.NewServer(g.GKE)
	g.ContainerEndpoint = g.httpServer.URL + "/"
	return g, nil
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

// Stop stops the servers.
func (g *GCP) Stop() {
	g.grpcServer.Stop()
	g.httpServer.Close()
}

// Mutations is the number of mutating calls all fakes received.
func (g *GCP) Mutations() int64 {
	return g.IAM.Counters.Mutations.Load() + g.Projects.Counters.Mutations.Load()
}

// --- IAM admin ------------------------------------------------------------

// IAM fakes the IAM admin API: service accounts and their IAM policies.
type IAM struct {
	adminpb.UnimplementedIAMServer
	Counters Counters
	// Faults, if set, may fail any call.
	Faults Faults
	// Denied, if set, makes calls on resources it returns true for fail
	// with PERMISSION_DENIED.
	Denied func(method, resource string) bool

	mu       sync.Mutex
	accounts map[string]*adminpb.ServiceAccount // by email
	projects map[string]bool
	policies *policyStore
	nextID   int
}

func (f *IAM) check(method, resource string) error {
	if f.Faults != nil {
		if err := f.Faults(method); err != nil {
			return err
		}
	}
	if f.Denied != nil && f.Denied(method, resource) {
		return status.Errorf(codes.PermissionDenied, "Permission 'iam.serviceAccounts.%s' denied on resource %s (or it may not exist)", strings.ToLower(method[:1])+method[1:], resource)
	}
	return nil
}

// accountEmail takes projects/P/serviceAccounts/EMAIL (or projects/-/...).
func accountEmail(name string) string {
	i := strings.LastIndex(name, "/")
	return name[i+1:]
}

func (f *IAM) GetServiceAccount(ctx context.Context, req *adminpb.GetServiceAccountRequest) (*adminpb.ServiceAccount, error) {
	f.Counters.Reads.Add(1)
	if err := f.check("GetServiceAccount", req.Name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[accountEmail(req.Name)]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Unknown service account %s", req.Name)
	}
	return cloneAccount(a), nil
}

func (f *IAM) CreateServiceAccount(ctx context.Context, req *adminpb.CreateServiceAccountRequest) (*adminpb.ServiceAccount, error) {
	f.Counters.Mutations.Add(1)
	if err := f.check("CreateServiceAccount", req.Name); err != nil {
		return nil, err
	}
	project := strings.TrimPrefix(req.Name, "projects/")
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.projects[project] {
		return nil, status.Errorf(codes.NotFound, "Project %s not found or deleted.", project)
	}
	email := fmt.Sprintf("%s@%s.iam.gserviceaccount.com", req.AccountId, project)
	if _, ok := f.accounts[email]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "Service account %s already exists within project %s.", req.AccountId, req.Name)
	}
	if req.ServiceAccount != nil && len(req.ServiceAccount.Description) > maxDescription {
		return nil, status.Errorf(codes.InvalidArgument, "Description is too long: %d bytes, at most %d", len(req.ServiceAccount.Description), maxDescription)
	}
	f.nextID++
	a := &adminpb.ServiceAccount{
		Name: "projects/" + project + "/serviceAccounts/" + email, ProjectId: project, Email: email,
		UniqueId: fmt.Sprintf("1000%06d", f.nextID),
	}
	if req.ServiceAccount != nil {
		a.DisplayName, a.Description = req.ServiceAccount.DisplayName, req.ServiceAccount.Description
	}
	f.accounts[email] = a
	return cloneAccount(a), nil
}

// PatchServiceAccount changes the display name and description, as IAM
// does; the description is at most 256 bytes.
func (f *IAM) PatchServiceAccount(ctx context.Context, req *adminpb.PatchServiceAccountRequest) (*adminpb.ServiceAccount, error) {
	f.Counters.Mutations.Add(1)
	sa := req.GetServiceAccount()
	if err := f.check("PatchServiceAccount", sa.GetName()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[accountEmail(sa.GetName())]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Unknown service account %s", sa.GetName())
	}
	for _, p := range req.GetUpdateMask().GetPaths() {
		switch p {
		case "description":
			if len(sa.Description) > maxDescription {
				return nil, status.Errorf(codes.InvalidArgument, "Description is too long: %d bytes, at most %d", len(sa.Description), maxDescription)
			}
			a.Description = sa.Description
		case "display_name":
			if len(sa.DisplayName) > 100 {
				return nil, status.Errorf(codes.InvalidArgument, "Display name is too long")
			}
			a.DisplayName = sa.DisplayName
		default:
			return nil, status.Errorf(codes.InvalidArgument, "Invalid update mask path %q", p)
		}
	}
	return cloneAccount(a), nil
}

// maxDescription is IAM's limit on a service account's description.
const maxDescription = 256

func (f *IAM) DeleteServiceAccount(ctx context.Context, req *adminpb.DeleteServiceAccountRequest) (*emptypb.Empty, error) {
	f.Counters.Mutations.Add(1)
	if err := f.check("DeleteServiceAccount", req.Name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	email := accountEmail(req.Name)
	if _, ok := f.accounts[email]; !ok {
		return nil, status.Errorf(codes.NotFound, "Unknown service account %s", req.Name)
	}
	delete(f.accounts, email)
	return &emptypb.Empty{}, nil
}

func (f *IAM) GetIamPolicy(ctx context.Context, req *iampb.GetIamPolicyRequest) (*iampb.Policy, error) {
	f.Counters.Reads.Add(1)
	if err := f.check("GetIamPolicy", req.Resource); err != nil {
		return nil, err
	}
	if !f.exists(req.Resource) {
		return nil, status.Errorf(codes.NotFound, "Unknown service account %s", req.Resource)
	}
	return f.policies.get(accountEmail(req.Resource), req.GetOptions().GetRequestedPolicyVersion()), nil
}

func (f *IAM) SetIamPolicy(ctx context.Context, req *iampb.SetIamPolicyRequest) (*iampb.Policy, error) {
	f.Counters.Mutations.Add(1)
	if err := f.check("SetIamPolicy", req.Resource); err != nil {
		return nil, err
	}
	if !f.exists(req.Resource) {
		return nil, status.Errorf(codes.NotFound, "Unknown service account %s", req.Resource)
	}
	p, err := f.policies.set(accountEmail(req.Resource), req.Policy)
	if status.Code(err) == codes.Aborted {
		f.Counters.Aborted.Add(1)
	}
	return p, err
}

func (f *IAM) exists(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.accounts[accountEmail(name)]
	return ok
}

// Account returns a copy of the account with email, or nil.
func (f *IAM) Account(email string) *adminpb.ServiceAccount {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.accounts[email]; ok {
		return cloneAccount(a)
	}
	return nil
}

// PutAccount creates an account directly (test setup: one vllm-hpa did not
// create).
func (f *IAM) PutAccount(project, id, displayName, description string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	email := fmt.Sprintf("%s@%s.iam.gserviceaccount.com", id, project)
	f.accounts[email] = &adminpb.ServiceAccount{Name: "projects/" + project + "/serviceAccounts/" + email, ProjectId: project, Email: email, DisplayName: displayName, Description: description}
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

	mu       sync.Mutex
	projects map[string]Project
	policies *policyStore
}

func (f *Projects) lookup(method, name string) (Project, error) {
	if f.Faults != nil {
		if err := f.Faults(method); err != nil {
			return Project{}, err
		}
	}
	id := strings.TrimPrefix(name, "projects/")
	f.mu.Lock()
	p, ok := f.projects[id]
	f.mu.Unlock()
	// GCP answers 403 for a project that does not exist or that the caller
	// may not see, and 404 only to callers who could see it.
	if f.Denied != nil && f.Denied(method, name) {
		return Project{}, status.Errorf(codes.PermissionDenied, "The caller does not have permission (resourcemanager.projects.%s on %s)", strings.ToLower(method[:1])+method[1:], name)
	}
	if !ok {
		return Project{}, status.Errorf(codes.NotFound, "Project %s not found.", name)
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

	mu       sync.Mutex
	clusters map[string]*container.Cluster // by projects/P/locations/L/clusters/C
}

// PutCluster sets what clusters.get returns for name.
func (f *Container) PutCluster(name string, c *container.Cluster) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clusters[name] = c
}

func (f *Container) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodGet {
		f.Counters.Mutations.Add(1)
		w.WriteHeader(http.StatusNotImplemented)
		w.Write([]byte(`{"error":{"code":501,"message":"not implemented by the fake","status":"UNIMPLEMENTED"}}`))
		return
	}
	f.Counters.Reads.Add(1)
	name := strings.TrimPrefix(r.URL.Path, "/v1/")
	f.mu.Lock()
	c, ok := f.clusters[name]
	f.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"code":404,"message":"Not found: %s.","status":"NOT_FOUND"}}`, name)
		return
	}
	json.NewEncoder(w).Encode(c)
}
