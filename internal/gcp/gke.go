// Package gcp is vllm-hpa's access to Google Cloud: credentials (Application
// Default Credentials, optionally impersonating a service account) and the
// container (GKE) API. Every API's endpoint can be overridden, which the
// tests and the local emulator use to point it at fakes on loopback.
package gcp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	container "google.golang.org/api/container/v1"
	"google.golang.org/api/impersonate"
	"google.golang.org/api/option"
	"k8s.io/client-go/rest"
)

// Scope is the OAuth scope every call uses.
const Scope = "https://www.googleapis.com/auth/cloud-platform"

// Options are how to reach Google APIs.
type Options struct {
	// ContainerEndpoint overrides the container API's endpoint.
	ContainerEndpoint string
	// ServiceUsageEndpoint overrides the Service Usage API's endpoint.
	ServiceUsageEndpoint string
	// Impersonate, if set, is the service account every call acts as.
	Impersonate string
	// TokenSource, if set, is used instead of looking credentials up.
	TokenSource oauth2.TokenSource
	// CredentialsFile, if set, is the Application Default Credentials file
	// (the command's GOOGLE_APPLICATION_CREDENTIALS); otherwise the
	// standard lookup runs.
	CredentialsFile string
}

// Scopes are what every token asks for: cloud-platform, and userinfo.email
// as GKE's own auth plugin does, without which Kubernetes RBAC knows a
// Google service account by its numeric id instead of its email.
var Scopes = []string{Scope, "https://www.googleapis.com/auth/userinfo.email"}

// NoCredentialsError is the absence of usable Google credentials: what
// commands that can go on without the Google APIs tell apart.
type NoCredentialsError struct{ Err error }

func (e *NoCredentialsError) Error() string {
	return fmt.Sprintf("application default credentials: %v (run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS)", e.Err)
}

func (e *NoCredentialsError) Unwrap() error { return e.Err }

// TokenSource returns Application Default Credentials, impersonating
// o.Impersonate when set (the usual setup for CI).
func TokenSource(ctx context.Context, o Options) (oauth2.TokenSource, error) {
	if o.TokenSource != nil {
		return o.TokenSource, nil
	}
	var creds *google.Credentials
	var err error
	if o.CredentialsFile != "" {
		var b []byte
		if b, err = readSmallFile(o.CredentialsFile); err == nil {
			creds, err = google.CredentialsFromJSONWithTypeAndParams(ctx, b, credentialsType(b), google.CredentialsParams{Scopes: Scopes})
		}
	} else {
		creds, err = google.FindDefaultCredentials(ctx, Scopes...)
	}
	if err != nil {
		return nil, &NoCredentialsError{Err: err}
	}
	if o.Impersonate == "" {
		return creds.TokenSource, nil
	}
	ts, err := impersonate.CredentialsTokenSource(ctx, impersonate.CredentialsConfig{
		TargetPrincipal: o.Impersonate,
		Scopes:          Scopes,
	}, option.WithTokenSource(creds.TokenSource))
	if err != nil {
		return nil, fmt.Errorf("impersonate %s: %w", o.Impersonate, err)
	}
	return ts, nil
}

// readSmallFile reads a credentials file, which is a few kilobytes.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	return b, err
}

// credentialsType is the "type" of a credentials JSON file.
func credentialsType(b []byte) google.CredentialsType {
	var v struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(b, &v)
	return google.CredentialsType(v.Type)
}

// ClientOptions are the options for a Google API client with endpoint
// (empty for Google's) and token source ts.
func ClientOptions(endpoint string, ts oauth2.TokenSource) []option.ClientOption {
	opts := []option.ClientOption{option.WithTokenSource(ts)}
	if endpoint != "" {
		opts = append(opts, option.WithEndpoint(endpoint))
	}
	return opts
}

// ClusterName is the container API's resource name of a cluster.
func ClusterName(project, location, cluster string) string {
	return fmt.Sprintf("projects/%s/locations/%s/clusters/%s", project, location, cluster)
}

// restOptions are a REST client's options for endpoint ("" for Google's),
// authenticated with ts (nil: no credentials, for local fakes).
func restOptions(endpoint string, ts oauth2.TokenSource) []option.ClientOption {
	opts := []option.ClientOption{option.WithoutAuthentication()}
	if ts != nil {
		opts = []option.ClientOption{option.WithTokenSource(ts)}
	}
	if endpoint != "" {
		opts = append(opts, option.WithEndpoint(endpoint))
	}
	return opts
}

// GetCluster reads a cluster through the container API at endpoint.
func GetCluster(ctx context.Context, endpoint string, ts oauth2.TokenSource, project, location, cluster string) (*container.Cluster, error) {
	svc, err := container.NewService(ctx, restOptions(endpoint, ts)...)
	if err != nil {
		return nil, err
	}
	name := ClusterName(project, location, cluster)
	var c *container.Cluster
	_, err = Retry(ctx, DefaultBackoff, func(ctx context.Context) (err error) {
		c, err = svc.Projects.Locations.Clusters.Get(name).Context(ctx).Do()
		return err
	})
	if err != nil {
		return nil, Classify(err, "get cluster "+name)
	}
	return c, nil
}

// RESTConfig is a Kubernetes client configuration for a GKE cluster: its
// endpoint and CA certificate from the container API, and OAuth tokens from
// ts. No kubeconfig and no gcloud are needed. endpointType picks the
// endpoint: "public" (the default), "private" (the control plane's internal
// IP, for clusters without a public endpoint) or "dns" (the DNS endpoint,
// which serves a publicly trusted certificate: the cluster CA is not
// pinned there).
func RESTConfig(c *container.Cluster, ts oauth2.TokenSource, endpointType string) (*rest.Config, error) {
	host, pinCA := c.Endpoint, true
	switch endpointType {
	case "private":
		if c.PrivateClusterConfig == nil || c.PrivateClusterConfig.PrivateEndpoint == "" {
			return nil, fmt.Errorf("cluster %s has no private endpoint: use --endpoint-type public or dns", c.Name)
		}
		host = c.PrivateClusterConfig.PrivateEndpoint
	case "dns":
		if c.ControlPlaneEndpointsConfig == nil || c.ControlPlaneEndpointsConfig.DnsEndpointConfig == nil || c.ControlPlaneEndpointsConfig.DnsEndpointConfig.Endpoint == "" {
			return nil, fmt.Errorf("cluster %s has no DNS endpoint: enable it with gcloud container clusters update %s --enable-dns-access, or use --endpoint-type public or private", c.Name, c.Name)
		}
		host, pinCA = c.ControlPlaneEndpointsConfig.DnsEndpointConfig.Endpoint, false
	default:
		if host == "" {
			return nil, fmt.Errorf("cluster %s has no public endpoint (status %s): use --endpoint-type private or dns", c.Name, c.Status)
		}
	}
	rc := &rest.Config{
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return &oauth2.Transport{Source: ts, Base: rt}
		},
	}
	if pinCA {
		if c.MasterAuth == nil || c.MasterAuth.ClusterCaCertificate == "" {
			return nil, fmt.Errorf("cluster %s has no CA certificate yet (status %s)", c.Name, c.Status)
		}
		ca, err := base64.StdEncoding.DecodeString(c.MasterAuth.ClusterCaCertificate)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: CA certificate: %w", c.Name, err)
		}
		rc.TLSClientConfig = rest.TLSClientConfig{CAData: ca}
	}
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	rc.Host = host
	return rc, nil
}
