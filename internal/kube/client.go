// Package kube is vllm-hpa's access to the Kubernetes API: connecting like
// kubectl, server-side apply with one field manager, label-guarded deletes,
// and watches that wait for conditions.
package kube

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/disk"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vllm-hpa/vllm-hpa/internal/environ"
)

// FieldManager is the one field manager vllm-hpa applies with.
const FieldManager = "vllm-hpa"

// Client bundles the clients the steps use.
type Client struct {
	Config  *rest.Config
	Typed   kubernetes.Interface
	Dynamic dynamic.Interface
	// raw is the dynamic client's REST client, for the one call whose
	// HTTP status matters (apply: 201 means created).
	raw       rest.Interface
	Discovery discovery.CachedDiscoveryInterface
	mapper    *mapper
}

// KubeconfigOptions select a kubeconfig the way kubectl does.
type KubeconfigOptions struct {
	Path    string // --kubeconfig; "" uses $KUBECONFIG and ~/.kube/config
	Context string // --context
	// Env gives $KUBECONFIG and $HOME.
	Env environ.Env
}

// loadingRules are kubectl's: an explicit file, else the files of
// $KUBECONFIG merged, else ~/.kube/config, read from o.Env.
func (o KubeconfigOptions) loadingRules() *clientcmd.ClientConfigLoadingRules {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: o.Path}
	if v := o.Env.Get(clientcmd.RecommendedConfigPathEnvVar); v != "" {
		rules.Precedence = filepath.SplitList(v)
	} else {
		rules.Precedence = []string{filepath.Join(o.Env.Home(), clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName)}
	}
	return rules
}

// maxKubeconfigSize bounds a kubeconfig file: a real one is kilobytes,
// and /dev/zero given as one must not be read forever.
const maxKubeconfigSize = 16 << 20

// loadable says why the kubeconfig files o names cannot be read as small
// regular files ("" when they can): client-go reads them whole, so a
// device, a FIFO or a huge file must be refused before it does.
func (o KubeconfigOptions) loadable() (path, why string) {
	files := o.loadingRules().Precedence
	if o.Path != "" {
		files = []string{o.Path}
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		switch {
		case err != nil && o.Path == "":
			continue // a missing file of $KUBECONFIG is skipped, as kubectl does
		case err != nil:
			return f, "a readable kubeconfig file"
		case !fi.Mode().IsRegular():
			return f, "a kubeconfig file, not a device, pipe or directory"
		case fi.Size() > maxKubeconfigSize:
			return f, fmt.Sprintf("a kubeconfig file of at most %d bytes", maxKubeconfigSize)
		}
	}
	return "", ""
}

// KubeconfigError is a kubeconfig that cannot give a connection: Setting
// says which input is to blame (kube.kubeconfig or kube.context), or ""
// when none was given and none was found.
type KubeconfigError struct {
	Setting string
	Value   string
	Problem string
}

func (e *KubeconfigError) Error() string { return e.Problem }

// CheckKubeconfig proves, without any request, that the kubeconfig loads
// and names a usable context and cluster: what kubectl would refuse is
// refused before anything is sent.
func CheckKubeconfig(o KubeconfigOptions) error {
	rules := o.loadingRules()
	if path, why := o.loadable(); why != "" {
		return &KubeconfigError{Setting: "kube.kubeconfig", Value: path, Problem: why}
	}
	if env := o.Env.Get(clientcmd.RecommendedConfigPathEnvVar); o.Path == "" && env != "" && !anyFile(rules.Precedence) {
		// kubectl would quietly connect to nothing; the user meant a file.
		return &KubeconfigError{Setting: clientcmd.RecommendedConfigPathEnvVar, Value: env, Problem: "a list of kubeconfig files of which at least one exists"}
	}
	raw, err := rules.Load()
	if err != nil {
		setting, value := "kube.kubeconfig", o.Path
		if o.Path == "" {
			value = strings.Join(rules.Precedence, string(filepath.ListSeparator))
		}
		return &KubeconfigError{Setting: setting, Value: value, Problem: "a valid kubeconfig (" + firstLine(err.Error()) + ")"}
	}
	name := o.Context
	if name == "" {
		name = raw.CurrentContext
	}
	if name == "" {
		if len(raw.Contexts) == 0 {
			return &KubeconfigError{Problem: "no kubeconfig found (looked in " + strings.Join(rules.Precedence, ", ") + "): get one with `gcloud container clusters get-credentials CLUSTER --location LOCATION --project PROJECT`, or give --cluster and --location to connect through the GKE API"}
		}
		return &KubeconfigError{Setting: "kube.context", Problem: "set: the kubeconfig has no current context; choose one of " + strings.Join(sortedKeys(raw.Contexts), ", ")}
	}
	ctx, ok := raw.Contexts[name]
	if !ok {
		return &KubeconfigError{Setting: "kube.context", Value: name, Problem: "a context of the kubeconfig: one of " + strings.Join(sortedKeys(raw.Contexts), ", ")}
	}
	cluster, ok := raw.Clusters[ctx.Cluster]
	if !ok {
		return &KubeconfigError{Setting: "kube.context", Value: name, Problem: "a context whose cluster " + ctx.Cluster + " the kubeconfig defines"}
	}
	server := cluster.Server
	if !strings.Contains(server, "://") {
		server = "https://" + server // as client-go reads a bare host:port
	}
	if u, err := url.Parse(server); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return &KubeconfigError{Setting: "kube.kubeconfig", Value: cluster.LocationOfOrigin,
			Problem: fmt.Sprintf("a kubeconfig whose cluster %s has a server URL such as https://203.0.113.10 (it has %q)", ctx.Cluster, cluster.Server)}
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	if _, err := clientcmd.NewNonInteractiveClientConfig(*raw, name, overrides, rules).ClientConfig(); err != nil {
		return &KubeconfigError{Setting: "kube.context", Value: name, Problem: "a usable context (" + firstLine(err.Error()) + ")"}
	}
	return nil
}

// anyFile reports whether any of paths is an existing file.
func anyFile(paths []string) bool {
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Contexts are the kubeconfig's context names, sorted (none when it does
// not load).
func Contexts(o KubeconfigOptions) []string {
	if _, why := o.loadable(); why != "" {
		return nil
	}
	raw, err := o.loadingRules().Load()
	if err != nil {
		return nil
	}
	return sortedKeys(raw.Contexts)
}

// ContextOf is the kubeconfig context a connection uses and its
// namespace ("" when it sets none); ok is false when the kubeconfig does
// not load or names no context (CheckKubeconfig says why).
func ContextOf(o KubeconfigOptions) (name, namespace string, ok bool) {
	if _, why := o.loadable(); why != "" {
		return "", "", false
	}
	raw, err := o.loadingRules().Load()
	if err != nil {
		return "", "", false
	}
	name = o.Context
	if name == "" {
		name = raw.CurrentContext
	}
	c, found := raw.Contexts[name]
	if !found {
		return "", "", false
	}
	return name, c.Namespace, true
}

// GKEContext reads the project, location and cluster from a context name
// as gcloud writes it: gke_PROJECT_LOCATION_CLUSTER.
func GKEContext(name string) (project, location, cluster string, ok bool) {
	parts := strings.SplitN(name, "_", 4)
	if len(parts) != 4 || parts[0] != "gke" || parts[1] == "" || parts[2] == "" || parts[3] == "" {
		return "", "", "", false
	}
	return parts[1], parts[2], parts[3], true
}

// RESTConfigFromKubeconfig loads a client configuration by the standard
// loading rules.
func RESTConfigFromKubeconfig(o KubeconfigOptions) (*rest.Config, error) {
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(o.loadingRules(), overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// DialTimeout bounds connecting to the API server: a cluster that is down
// or unreachable fails in seconds, not minutes.
const DialTimeout = 10 * time.Second

// RequestTimeout bounds every request but watches, from the request to
// the end of its answer: a server that accepts and never answers cannot
// hold a command beyond it. (Watches are bounded by their wait.)
const RequestTimeout = 2 * time.Minute

// New builds a Client from a REST configuration; env gives where the
// discovery cache lives.
func New(cfg *rest.Config, env environ.Env) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	// The API server's deprecation warnings (v1 Endpoints, listed by a
	// namespace scan) are about APIs vllm-hpa reads on purpose.
	cfg.WarningHandler = rest.NoWarnings{}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "vllm-hpa"
	}
	// Steps issue short bursts of requests; the default 5 QPS would make
	// them wait on the client side for no reason.
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	// Transient failures (dropped connections, 429 and 5xx) are retried so
	// that a flaky control plane does not fail a run.
	cfg.Wrap(Retrying)
	cfg.Wrap(bounded)
	typed, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	raw, err := rest.UnversionedRESTClientFor(dynamic.ConfigFor(cfg))
	if err != nil {
		return nil, err
	}
	disc, err := cachedDiscovery(cfg, env)
	if err != nil {
		return nil, err
	}
	return &Client{
		Config:    cfg,
		Typed:     typed,
		Dynamic:   dyn,
		raw:       raw,
		Discovery: disc,
		mapper:    newMapper(disc),
	}, nil
}

// cachedDiscovery keeps discovery on disk where kubectl keeps it
// ($KUBECACHEDIR, else ~/.kube/cache), in kubectl's layout and with its
// 6-hour lifetime, so that one command after another (and after kubectl)
// does not re-read the server's API list each time. A kind missing from a
// stale cache makes the mapper re-read it (see Resource).
func cachedDiscovery(cfg *rest.Config, env environ.Env) (discovery.CachedDiscoveryInterface, error) {
	dir := env.Get("KUBECACHEDIR")
	if dir == "" {
		dir = filepath.Join(env.Home(), ".kube", "cache")
	}
	return disk.NewCachedDiscoveryClientForConfig(cfg, discoveryCacheDir(filepath.Join(dir, "discovery"), cfg.Host), filepath.Join(dir, "http"), 6*time.Hour)
}

var unsafeFileCharacters = regexp.MustCompile(`[^(\w/.)]`)

// discoveryCacheDir is kubectl's per-server directory name (cli-runtime's
// computeDiscoverCacheDir), so that both tools share one cache.
func discoveryCacheDir(parent, host string) string {
	host = strings.Replace(strings.Replace(host, "https://", "", 1), "http://", "", 1)
	return filepath.Join(parent, unsafeFileCharacters.ReplaceAllString(host, "_"))
}

// ClusterID identifies the cluster: the UID of its kube-system namespace,
// which lives as long as the cluster (the identifier Kubernetes tooling
// conventionally uses), shortened to 12 characters.
func ClusterID(ctx context.Context, k *Client) (string, error) {
	ns, err := k.Typed.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read namespace kube-system (the cluster's identity): %w", err)
	}
	id := strings.ReplaceAll(string(ns.UID), "-", "")
	if len(id) > 12 {
		id = id[:12]
	}
	return id, nil
}

// Reachable proves that the API server of rc accepts connections, with one
// TCP connection and no request (no API request is spent on it): a cluster
// that is down or unreachable is named in at most DialTimeout, before a
// command starts, instead of after every request's retries. Behind a proxy
// the server is not dialled directly; the requests themselves are bounded.
func Reachable(ctx context.Context, rc *rest.Config) error {
	host := rc.Host
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	u, err := url.Parse(host)
	if err != nil {
		return err
	}
	proxy := rc.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	if p, err := proxy(&http.Request{URL: u}); err != nil || p != nil {
		return nil
	}
	addr := u.Host
	if u.Port() == "" {
		port := "443"
		if u.Scheme == "http" {
			port = "80"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	dial := rc.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}
