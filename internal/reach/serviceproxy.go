package reach

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/client-go/rest"
)

// ServiceProxy is the base URL of the Service's port through the API
// server's service proxy, and the transport that authenticates to it.
// Unlike a port-forward, which holds one pod, the service proxy picks a
// Ready endpoint from the Service's EndpointSlices for every request, at
// random, as the Service's own routing spreads its clients: the way to see
// what a scale-down does to the requests of every pod.
//
// The transport is the client's own, credentials included (on a cluster
// reached through the container API they are a wrapper); its retries leave
// proxied requests alone (kube.Retrying), so a completion a stopped pod
// cut is seen as failed, once.
func ServiceProxy(cfg *rest.Config, namespace, service string, port int32) (string, http.RoundTripper, error) {
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return "", nil, err
	}
	host := strings.TrimSuffix(cfg.Host, "/")
	if !strings.Contains(host, "://") {
		host = "https://" + host // a bare host:port, as client-go takes it
	}
	base, err := url.Parse(host)
	if err != nil || base.Host == "" {
		return "", nil, fmt.Errorf("the API server's address %q is not a URL", cfg.Host)
	}
	base.Path = strings.TrimSuffix(base.Path, "/") + fmt.Sprintf("/api/v1/namespaces/%s/services/%s:%d/proxy", url.PathEscape(namespace), url.PathEscape(service), port)
	return base.String(), rt, nil
}
