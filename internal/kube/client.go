// Package kube is vllm-hpa's access to the Kubernetes API: connecting like
// kubectl, server-side apply with one field manager, label-guarded deletes,
// and watches that wait for conditions.
package kube

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/disk"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/homedir"
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
}

// RESTConfigFromKubeconfig loads a client configuration by the standard
// loading rules.
func RESTConfigFromKubeconfig(o KubeconfigOptions) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Path
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// New builds a Client from a REST configuration.
func New(cfg *rest.Config) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
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
	disc, err := cachedDiscovery(cfg)
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
func cachedDiscovery(cfg *rest.Config) (discovery.CachedDiscoveryInterface, error) {
	dir := os.Getenv("KUBECACHEDIR")
	if dir == "" {
		dir = filepath.Join(homedir.HomeDir(), ".kube", "cache")
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
