package kube

import (
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
