// Package kube is vllm-hpa's access to the Kubernetes API: connecting like
// kubectl, server-side apply with one field manager, label-guarded deletes,
// and watches that wait for conditions.
package kube

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// FieldManager is the one field manager vllm-hpa applies with.
const FieldManager = "vllm-hpa"

// Client bundles the clients the steps use.
type Client struct {
	Config    *rest.Config
	Typed     kubernetes.Interface
	Dynamic   dynamic.Interface
	Discovery discovery.CachedDiscoveryInterface
	Mapper    meta.ResettableRESTMapper
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
	disc := memory.NewMemCacheClient(typed.Discovery())
	return &Client{
		Config:    cfg,
		Typed:     typed,
		Dynamic:   dyn,
		Discovery: disc,
		Mapper:    restmapper.NewDeferredDiscoveryRESTMapper(disc),
	}, nil
}
