package gcpfake

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	storage "google.golang.org/api/storage/v1"
	"google.golang.org/genproto/googleapis/type/expr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Storage fakes the Cloud Storage JSON API's buckets.get, objects.list
// (with prefix and delimiter) and the bucket IAM policy (getIamPolicy,
// setIamPolicy, testIamPermissions), with the JSON API's
// own error documents: a legacy errors[] reason and no ErrorInfo
// (notFound, conditionNotMet for a stale etag, invalid for a member IAM
// refuses). Bucket policies share the fakes' IAM rules: members validated
// as IAM does (a Workload Identity principal needs its pool), and a grant
// takes effect for the workloads that rely on it after IAMPropagation.
type Storage struct {
	Counters Counters
	// Denied, if set, refuses the caller the permissions on the buckets
	// it returns true for (storage.buckets.get, .getIamPolicy,
	// .setIamPolicy, storage.objects.list): their calls answer 403, and
	// testIamPermissions leaves them out.
	Denied func(permission, bucket string) bool

	// LostAnswers is how many of the next setIamPolicy calls are applied
	// and then answered 503, as a write whose answer a network or a
	// backend lost.
	LostAnswers atomic.Int32

	g        *GCP
	mu       sync.Mutex
	buckets  map[string]*bucket
	policies *policyStore // by BucketResource
}

type bucket struct {
	project string
	objects map[string]int64 // name -> size
}

func newStorage(g *GCP) *Storage {
	return &Storage{g: g, buckets: map[string]*bucket{}, policies: newPolicyStore()}
}

// resource is how IAM names a bucket.
func bucketResource(name string) string { return "projects/_/buckets/" + name }

// PutBucket creates bucket name in project (kept if it exists).
func (f *Storage) PutBucket(project, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.buckets[name]; !ok {
		f.buckets[name] = &bucket{project: project, objects: map[string]int64{}}
	}
}

// PutObject writes an object of size bytes into an existing bucket.
func (f *Storage) PutObject(bucketName, object string, size int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.buckets[bucketName]; ok {
		b.objects[object] = size
	}
}

// Policy is a copy of a bucket's policy; SetPolicy sets one as a test's
// setup (its grants as old as can be).
func (f *Storage) Policy(bucketName string) *iampb.Policy {
	return f.policies.Policy(bucketResource(bucketName))
}

// SetPolicy sets a bucket's policy as a test's setup.
func (f *Storage) SetPolicy(bucketName string, p *iampb.Policy) {
	f.policies.SetPolicy(bucketResource(bucketName), p)
}

// readRoles are the predefined roles that let a principal list and read
// a bucket's objects.
var readRoles = []string{"roles/storage.objectViewer", "roles/storage.objectUser", "roles/storage.objectAdmin", "roles/storage.admin"}

// CanRead says why member may not read the objects of bucketName now, in
// the words a client of the JSON API gets (nil: it may): the bucket must
// exist and a role that reads objects be granted to member on its
// policy, that grant propagated.
func (f *Storage) CanRead(bucketName, member string, now time.Time) error {
	f.mu.Lock()
	_, ok := f.buckets[bucketName]
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("googleapi: Error 404: The specified bucket does not exist., notFound")
	}
	for _, role := range readRoles {
		if f.g.effective(f.policies, bucketResource(bucketName), role, member, now) {
			return nil
		}
	}
	return fmt.Errorf("googleapi: Error 403: %s does not have storage.objects.list access to the Google Cloud Storage bucket. Permission 'storage.objects.list' denied on resource (or it may not exist)., forbidden", member)
}

// ReadWeights is what the Run:ai streamer reads as member: the total size
// of the *.safetensors objects directly under prefix, or why member may not read
// them (CanRead), or that there are none.
func (f *Storage) ReadWeights(bucketName, prefix, member string, now time.Time) (int64, error) {
	if err := f.CanRead(bucketName, member, now); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var total int64
	n := 0
	for name, size := range f.buckets[bucketName].objects {
		// The directory's own files, as the streamer lists them.
		rest, ok := strings.CutPrefix(name, prefix)
		if ok && !strings.Contains(rest, "/") && strings.HasSuffix(name, ".safetensors") {
			total += size
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("no safetensors files found in gs://%s/%s", bucketName, prefix)
	}
	return total, nil
}

// jsonError is an error as the JSON API sends it: the HTTP code, the
// message and one legacy item with its reason; no canonical status and no
// details.
func jsonError(httpStatus int, reason, format string, args ...any) *GoogleError {
	msg := fmt.Sprintf(format, args...)
	c := codes.Unknown
	switch httpStatus {
	case 400:
		c = codes.InvalidArgument
	case 403:
		c = codes.PermissionDenied
	case 404:
		c = codes.NotFound
	case 412:
		c = codes.FailedPrecondition
	case 503:
		c = codes.Unavailable
	}
	return &GoogleError{Code: c, HTTP: httpStatus, Message: msg, Legacy: []LegacyItem{{Message: msg, Domain: "global", Reason: reason}}, OnlyLegacy: true}
}

// bucketOf finds the request's bucket, answering as the JSON API does when
// it cannot be used.
func (f *Storage) bucketOf(w http.ResponseWriter, r *http.Request, permission string) (*bucket, bool) {
	name := r.PathValue("bucket")
	f.mu.Lock()
	b, ok := f.buckets[name]
	f.mu.Unlock()
	if ok {
		if e := f.g.gate("storage.googleapis.com", b.project); e != nil {
			e.WriteREST(w)
			return nil, false
		}
	}
	if f.Denied != nil && f.Denied(permission, name) {
		jsonError(403, "forbidden", "The caller does not have %s access to the Google Cloud Storage bucket. Permission '%s' denied on resource (or it may not exist).", permission, permission).WriteREST(w)
		return nil, false
	}
	if !ok {
		jsonError(404, "notFound", "The specified bucket does not exist.").WriteREST(w)
		return nil, false
	}
	return b, true
}

func (f *Storage) getBucket(w http.ResponseWriter, r *http.Request) {
	f.Counters.Reads.Add(1)
	if _, ok := f.bucketOf(w, r, "storage.buckets.get"); !ok {
		return
	}
	writeJSON(w, &storage.Bucket{Kind: "storage#bucket", Name: r.PathValue("bucket"), Id: r.PathValue("bucket")})
}

// listObjects pages through the objects under ?prefix=, in name order.
func (f *Storage) listObjects(w http.ResponseWriter, r *http.Request) {
	f.Counters.Reads.Add(1)
	b, ok := f.bucketOf(w, r, "storage.objects.list")
	if !ok {
		return
	}
	q := r.URL.Query()
	prefix, delimiter := q.Get("prefix"), q.Get("delimiter")
	max := 1000
	if n, err := strconv.Atoi(q.Get("maxResults")); err == nil && n > 0 && n < max {
		max = n
	}
	start := 0
	if t := q.Get("pageToken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			jsonError(400, "invalid", "Invalid page token.").WriteREST(w)
			return
		}
		start = n
	}
	f.mu.Lock()
	var names []string
	for name := range b.objects {
		// With a delimiter, objects below the next one are prefixes, not
		// items (the fake returns no prefixes: no caller reads them).
		if strings.HasPrefix(name, prefix) && (delimiter == "" || !strings.Contains(strings.TrimPrefix(name, prefix), delimiter)) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	out := &storage.Objects{Kind: "storage#objects"}
	for i := start; i < len(names) && i < start+max; i++ {
		out.Items = append(out.Items, &storage.Object{Kind: "storage#object", Bucket: r.PathValue("bucket"), Name: names[i], Size: uint64(b.objects[names[i]])})
	}
	f.mu.Unlock()
	if start+max < len(names) {
		out.NextPageToken = strconv.Itoa(start + max)
	}
	writeJSON(w, out)
}

// testIamPermissions answers which of ?permissions= the caller holds on
// the bucket (all but those Denied).
func (f *Storage) testIamPermissions(w http.ResponseWriter, r *http.Request) {
	f.Counters.Reads.Add(1)
	name := r.PathValue("bucket")
	f.mu.Lock()
	_, ok := f.buckets[name]
	f.mu.Unlock()
	if !ok {
		jsonError(404, "notFound", "The specified bucket does not exist.").WriteREST(w)
		return
	}
	out := &storage.TestIamPermissionsResponse{Kind: "storage#testIamPermissionsResponse"}
	for _, p := range r.URL.Query()["permissions"] {
		if f.Denied == nil || !f.Denied(p, name) {
			out.Permissions = append(out.Permissions, p)
		}
	}
	writeJSON(w, out)
}

func (f *Storage) getIamPolicy(w http.ResponseWriter, r *http.Request) {
	f.Counters.Reads.Add(1)
	if _, ok := f.bucketOf(w, r, "storage.buckets.getIamPolicy"); !ok {
		return
	}
	v, _ := strconv.Atoi(r.URL.Query().Get("optionsRequestedPolicyVersion"))
	writeJSON(w, toStoragePolicy(f.policies.get(bucketResource(r.PathValue("bucket")), int32(v)), r.PathValue("bucket")))
}

// setIamPolicy writes a bucket's policy guarded by its etag (a stale one:
// 412 conditionNotMet), refusing a member as IAM does (400 invalid).
func (f *Storage) setIamPolicy(w http.ResponseWriter, r *http.Request) {
	f.Counters.Mutations.Add(1)
	if _, ok := f.bucketOf(w, r, "storage.buckets.setIamPolicy"); !ok {
		return
	}
	var in storage.Policy
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		jsonError(400, "invalid", "Invalid JSON payload: %v", err).WriteREST(w)
		return
	}
	p := fromStoragePolicy(&in)
	if err := f.g.validate(p); err != nil {
		jsonError(400, "invalid", "%s", status.Convert(err).Message()).WriteREST(w)
		return
	}
	out, err := f.policies.set(bucketResource(r.PathValue("bucket")), p)
	if st, ok := status.FromError(err); ok && st.Code() == codes.Aborted {
		jsonError(412, "conditionNotMet", "Precondition Failed").WriteREST(w)
		return
	} else if err != nil {
		jsonError(400, "invalid", "%s", status.Convert(err).Message()).WriteREST(w)
		return
	}
	if f.LostAnswers.Add(-1) >= 0 {
		jsonError(503, "backendError", "Backend Error").WriteREST(w)
		return
	}
	f.LostAnswers.Store(max(f.LostAnswers.Load(), 0))
	writeJSON(w, toStoragePolicy(out, r.PathValue("bucket")))
}

func toStoragePolicy(p *iampb.Policy, bucketName string) *storage.Policy {
	out := &storage.Policy{Kind: "storage#policy", ResourceId: bucketResource(bucketName), Version: int64(p.Version), Etag: string(p.Etag)}
	for _, b := range p.Bindings {
		sb := &storage.PolicyBindings{Role: b.Role, Members: b.Members}
		if c := b.Condition; c != nil {
			sb.Condition = &storage.Expr{Expression: c.Expression, Title: c.Title, Description: c.Description}
		}
		out.Bindings = append(out.Bindings, sb)
	}
	return out
}

func fromStoragePolicy(in *storage.Policy) *iampb.Policy {
	p := &iampb.Policy{Version: int32(in.Version), Etag: []byte(in.Etag)}
	for _, b := range in.Bindings {
		ib := &iampb.Binding{Role: b.Role, Members: b.Members}
		if c := b.Condition; c != nil {
			ib.Condition = &expr.Expr{Expression: c.Expression, Title: c.Title, Description: c.Description}
		}
		p.Bindings = append(p.Bindings, ib)
	}
	return p
}
