package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
)

// mapper maps a kind to its resource by reading discovery for that one
// group version (from the disk cache when it is there), not for every API
// the server has. client-go's discovery mapper reads all of them, and a
// group version listing no resources (external.metrics.k8s.io usually)
// is never cached, so every process went back to the server, as kubectl
// does on such clusters.
type mapper struct {
	disc discovery.CachedDiscoveryInterface

	mu       sync.Mutex
	mappings map[schema.GroupVersionKind]*meta.RESTMapping
	warmed   bool
}

func newMapper(disc discovery.CachedDiscoveryInterface) *mapper {
	return &mapper{disc: disc, mappings: map[schema.GroupVersionKind]*meta.RESTMapping{}}
}

// mapping returns gvk's resource and scope. A kind the cached discovery
// does not have is looked up on the server once more (a CRD may have been
// installed since) before it is a *NoMatchError.
func (m *mapper) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mp, ok := m.mappings[gvk]; ok {
		return mp, nil
	}
	mp, err := m.lookup(gvk)
	if err == nil && mp == nil && !m.disc.Fresh() {
		m.disc.Invalidate()
		mp, err = m.lookup(gvk)
	}
	if err != nil {
		return nil, err
	}
	if m.disc.Fresh() && !m.warmed {
		// Everything so far came from the server, whose whole API list
		// is now in memory (aggregated discovery): write every group
		// version to disk at once, not one per later command.
		m.warmed = true
		_, _, _ = m.disc.ServerGroupsAndResources()
	}
	if mp == nil {
		return nil, &NoMatchError{GVK: gvk, Err: fmt.Errorf("no resource for kind %s in %s", gvk.Kind, gvk.GroupVersion())}
	}
	m.mappings[gvk] = mp
	return mp, nil
}

// lookup reads gvk's group version; nil without error when it is not served.
func (m *mapper) lookup(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	list, err := m.disc.ServerResourcesForGroupVersion(gvk.GroupVersion().String())
	if errors.Is(err, memory.ErrCacheNotFound) || apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("discovery of %s: %w", gvk.GroupVersion(), err)
	}
	for _, r := range list.APIResources {
		if r.Kind != gvk.Kind || strings.Contains(r.Name, "/") {
			continue
		}
		scope := meta.RESTScopeRoot
		if r.Namespaced {
			scope = meta.RESTScopeNamespace
		}
		return &meta.RESTMapping{Resource: gvk.GroupVersion().WithResource(r.Name), GroupVersionKind: gvk, Scope: scope}, nil
	}
	return nil, nil
}

// reset forgets every mapping and the cached discovery, for a resource
// that the server no longer serves.
func (m *mapper) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mappings = map[schema.GroupVersionKind]*meta.RESTMapping{}
	m.disc.Invalidate()
}

// Served reports whether the API server serves gvr (by its kind's group
// version in discovery, re-read once when the cache does not have it).
func (c *Client) Served(ctx context.Context, gvr schema.GroupVersionResource) (bool, error) {
	for attempt := 0; attempt < 2; attempt++ {
		list, err := c.Discovery.ServerResourcesForGroupVersion(gvr.GroupVersion().String())
		switch {
		case err == nil:
			for _, r := range list.APIResources {
				if r.Name == gvr.Resource {
					return true, nil
				}
			}
		case !errors.Is(err, memory.ErrCacheNotFound) && !apierrors.IsNotFound(err):
			return false, fmt.Errorf("discovery of %s: %w", gvr.GroupVersion(), err)
		}
		if c.Discovery.Fresh() {
			return false, nil
		}
		c.Discovery.Invalidate()
	}
	return false, nil
}

// GroupServedCached reports whether discovery, as cached, lists group: no
// request when the cache is fresh. For a cheap "can anything of this kind
// exist" where a stale answer only delays a tidy-up.
func (c *Client) GroupServedCached(group string) bool {
	groups, err := c.Discovery.ServerGroups()
	if err != nil {
		return true // unknown: let the caller look
	}
	for _, g := range groups.Groups {
		if g.Name == group {
			return true
		}
	}
	return false
}
