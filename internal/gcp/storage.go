package gcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/api/googleapi"
	storage "google.golang.org/api/storage/v1"
	"google.golang.org/genproto/googleapis/type/expr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ServiceStorage is the Cloud Storage API: the model bucket's policy and
// listing, and the streamer's reads.
const ServiceStorage = "storage.googleapis.com"

// RoleObjectViewer lets the vLLM pods list and read the model's objects.
const RoleObjectViewer = "roles/storage.objectViewer"

// ObjectReadRoles are the predefined roles that list and read a bucket's
// objects: objectViewer and those that include it.
var ObjectReadRoles = []string{RoleObjectViewer, "roles/storage.objectUser", "roles/storage.objectAdmin", "roles/storage.admin"}

// BucketPolicy is a Cloud Storage bucket's IAM policy, through the JSON
// API (google.golang.org/api/storage/v1: its Policy carries the etag,
// which cloud.google.com/go/storage's Policy3 keeps to itself, so the
// read-modify-write is guarded here as for every other policy).
func BucketPolicy(svc *storage.Service, bucket string) Policy {
	return &bucketPolicy{svc: svc, bucket: bucket}
}

type bucketPolicy struct {
	svc    *storage.Service
	bucket string
}

func (p *bucketPolicy) Resource() string { return BucketResource(p.bucket) }

// BucketResource is how IAM names a bucket.
func BucketResource(bucket string) string { return "projects/_/buckets/" + bucket }

func (p *bucketPolicy) Get(ctx context.Context) (*iampb.Policy, error) {
	pol, err := p.svc.Buckets.GetIamPolicy(p.bucket).OptionsRequestedPolicyVersion(PolicyVersion).Context(ctx).Do()
	if err != nil {
		return nil, err
	}
	out := &iampb.Policy{Version: int32(pol.Version), Etag: []byte(pol.Etag)}
	for _, b := range pol.Bindings {
		ib := &iampb.Binding{Role: b.Role, Members: b.Members}
		if c := b.Condition; c != nil {
			ib.Condition = &expr.Expr{Expression: c.Expression, Title: c.Title, Description: c.Description, Location: c.Location}
		}
		out.Bindings = append(out.Bindings, ib)
	}
	return out, nil
}

// Set writes pol guarded by its etag. Cloud Storage refuses a stale etag
// with 412 Precondition Failed (reason conditionNotMet), where IAM's own
// APIs answer ABORTED: it is made ABORTED here, so that Update reads again.
func (p *bucketPolicy) Set(ctx context.Context, pol *iampb.Policy) (*iampb.Policy, error) {
	in := &storage.Policy{Version: int64(pol.Version), Etag: string(pol.Etag)}
	for _, b := range pol.Bindings {
		sb := &storage.PolicyBindings{Role: b.Role, Members: b.Members}
		if c := b.Condition; c != nil {
			sb.Condition = &storage.Expr{Expression: c.Expression, Title: c.Title, Description: c.Description, Location: c.Location}
		}
		in.Bindings = append(in.Bindings, sb)
	}
	_, err := p.svc.Buckets.SetIamPolicy(p.bucket, in).Context(ctx).Do()
	var ge *googleapi.Error
	if errors.As(err, &ge) && ge.Code == http.StatusPreconditionFailed {
		return nil, status.Errorf(codes.Aborted, "the policy of %s changed since it was read (HTTP 412): %s", p.Resource(), ge.Message)
	}
	if err != nil {
		return nil, err
	}
	// The caller reads again when it needs the policy as written.
	return pol, nil
}

// ModelListing is what a model's directory in a bucket holds: the names
// of its own objects (not its subdirectories'), and their total size.
type ModelListing struct {
	Bucket, Path string
	// BucketMissing: the bucket does not exist.
	BucketMissing bool
	Files         []string
	Bytes         int64
	// Truncated: more objects than were read (the listing is bounded).
	Truncated bool
}

// maxListedObjects bounds the listing of a model's directory: a model is
// tens of files (a 405 B model, some two hundred); a directory that holds
// more is not a model's.
const maxListedObjects = 5000

// ListModel lists the objects directly under gs://bucket/dir/ (bounded by
// maxListedObjects); a bucket that does not exist is said so (objects.list
// answers 404 for it: no storage.buckets.get is needed).
func ListModel(ctx context.Context, svc *storage.Service, bucket, dir string) (ModelListing, error) {
	out := ModelListing{Bucket: bucket, Path: dir}
	prefix := dir + "/"
	page := ""
	for {
		var objs *storage.Objects
		// The directory's own objects, as the streamer lists them: not
		// those of its subdirectories.
		_, err := Retry(ctx, DefaultBackoff, func(ctx context.Context) (err error) {
			objs, err = svc.Objects.List(bucket).Prefix(prefix).Delimiter("/").PageToken(page).MaxResults(1000).Fields("nextPageToken", "items(name,size)").Context(ctx).Do()
			return err
		})
		if d, ok := DetailsOf(err); ok && d.Code == codes.NotFound && page == "" {
			out.BucketMissing = true
			return out, nil
		}
		if err != nil {
			return out, Classify(err, "list gs://"+bucket+"/"+prefix)
		}
		for _, o := range objs.Items {
			out.Files = append(out.Files, strings.TrimPrefix(o.Name, prefix))
			out.Bytes += int64(o.Size)
		}
		if page = objs.NextPageToken; page == "" {
			return out, nil
		}
		if len(out.Files) >= maxListedObjects {
			out.Truncated = true
			return out, nil
		}
	}
}

// Weights are the listing's safetensors files (the only format the Run:ai
// streamer reads).
func (l ModelListing) Weights() []string {
	return slices.DeleteFunc(slices.Clone(l.Files), func(f string) bool { return path.Ext(f) != ".safetensors" })
}

// ModelInBucket judges a listing of workload.model-source for vLLM's Run:ai
// streamer: the bucket exists, and the directory holds the model's
// config.json, its tokenizer and its weights as safetensors. A miss names
// the commands that put the model there.
func ModelInBucket(l ModelListing, model, location string) Precondition {
	source := "gs://" + l.Bucket + "/" + l.Path
	copyModel := CopyModelCommands(model, source)
	p := Precondition{Check: "model in bucket"}
	has := func(name string) bool { return slices.Contains(l.Files, name) }
	var missing []string
	if !has("config.json") {
		missing = append(missing, "config.json")
	}
	if !has("tokenizer.json") && !has("tokenizer.model") {
		missing = append(missing, "a tokenizer (tokenizer.json or tokenizer.model)")
	}
	if len(l.Weights()) == 0 {
		missing = append(missing, "weights as *.safetensors (the Run:ai streamer reads no other format)")
	}
	switch {
	case l.BucketMissing:
		p.Message = "the bucket gs://" + l.Bucket + " (workload.model-source) does not exist"
		p.Fix = fmt.Sprintf("gcloud storage buckets create gs://%s --location %s --uniform-bucket-level-access, then %s", l.Bucket, orDefault(Region(location), "REGION"), copyModel)
	case len(l.Files) == 0:
		p.Message = source + " holds no object: the model was not copied there"
		p.Fix = copyModel
	case len(missing) > 0:
		p.Message = fmt.Sprintf("%s lacks %s (%d objects there)", source, strings.Join(missing, ", "), len(l.Files))
		p.Fix = copyModel
	default:
		p.OK = true
		p.Message = fmt.Sprintf("%s: config.json, tokenizer, %d safetensors file(s), %s in %d objects", source, len(l.Weights()), humanBytes(l.Bytes), len(l.Files))
		if l.Truncated {
			p.Message += fmt.Sprintf(" (listing stopped at %d objects)", len(l.Files))
		}
	}
	return p
}

// Region is the region of a GKE location (a region, or a zone: its
// region), where a bucket for its nodes belongs (buckets have no zones).
func Region(location string) string {
	if i := strings.LastIndex(location, "-"); i > 0 && strings.Count(location, "-") == 2 && len(location)-i == 2 {
		return location[:i]
	}
	return location
}

// BucketPermissions the caller needs on the model bucket: deploy reads
// and writes its policy, and lists the model.
var BucketPermissions = []string{"storage.buckets.getIamPolicy", "storage.buckets.setIamPolicy", "storage.objects.list"}

// MissingBucketPermissions are the permissions of perms the caller does
// not hold on bucket (Cloud Storage's testIamPermissions).
func MissingBucketPermissions(ctx context.Context, svc *storage.Service, bucket string, perms []string) ([]string, error) {
	var held *storage.TestIamPermissionsResponse
	_, err := Retry(ctx, DefaultBackoff, func(ctx context.Context) (err error) {
		held, err = svc.Buckets.TestIamPermissions(bucket, perms).Context(ctx).Do()
		return err
	})
	if err != nil {
		return nil, Classify(err, "test permissions on gs://"+bucket)
	}
	return slices.DeleteFunc(slices.Clone(perms), func(p string) bool { return slices.Contains(held.Permissions, p) }), nil
}

// CopyModelCommands are the commands that put model into source: a
// download from Hugging Face (the hf CLI of huggingface_hub, with a token
// that may read the model) and a copy into the bucket.
func CopyModelCommands(model, source string) string {
	local := "./" + path.Base(model)
	return fmt.Sprintf("hf download %s --local-dir %s --exclude '*.pth' '*.bin' && gcloud storage rsync --recursive %s %s", model, local, local, source)
}

func humanBytes(n int64) string {
	const gib = 1 << 30
	if n >= gib/10 {
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
