package flex

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// The backstore allowlist. A PersistentVolume's backstoreServer names the host the driver logs
// in to with the volume's Datera credentials (or the node's credentials file); whoever can write
// that option (a hand-made PV, an inline flexVolume) could point it at a host of their own and
// collect the login. So the node decides, in its own config, which endpoints it talks to, and
// whether plain http (credentials in clear) is acceptable at all.

// normalizeHostPort checks an allowedBackstores entry: host:port, the port a number, no scheme,
// path or user info. Hosts compare case-insensitively, so the host is lower-cased; IPv6 literals
// are bracketed as net.JoinHostPort writes them.
func normalizeHostPort(s string) (string, error) {
	if strings.Contains(s, "/") || strings.Contains(s, "@") {
		return "", errors.New("want host:port (no scheme, path or user), e.g. datera.example.com:7718")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errors.New("want host:port, e.g. datera.example.com:7718 or [2001:db8::1]:7718")
	}
	if host == "" || strings.ContainsAny(host, " \t") {
		return "", errors.New("the host is empty or holds spaces")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("port %q is not a number in 1-65535", port)
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.Itoa(p)), nil
}

// endpointHostPort returns the host:port (normalized as in the allowlist) and the scheme of an
// endpoint URL made by datera.EndpointForBackstore; a URL without a port gets its scheme's.
func endpointHostPort(endpoint string) (hostport, scheme string, err error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", "", fmt.Errorf("endpoint %q is not an http(s) URL with a host", endpoint)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	hp, err := normalizeHostPort(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return "", "", fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	return hp, u.Scheme, nil
}

// checkBackstore decides whether this node may talk to the endpoint a volume's backstoreServer
// resolves to. It runs before any credential is read or any request sent.
func (c *NodeConfig) checkBackstore(backstore, endpoint string) error {
	hp, scheme, err := endpointHostPort(endpoint)
	if err != nil {
		return fmt.Errorf("option %s %q: %w", pvoptions.OptBackstoreServer, clip(backstore), err)
	}
	if len(c.AllowedBackstores) == 0 {
		return fmt.Errorf("option %s %q (%s): this node's allowedBackstores is empty, so it may talk to no backstore; "+
			"list the Datera management endpoints this node may use as host:port in allowedBackstores of %s",
			pvoptions.OptBackstoreServer, clip(backstore), hp, c.describePath())
	}
	if !slices.Contains(c.AllowedBackstores, hp) {
		return fmt.Errorf("option %s %q resolves to %s, which is not in this node's allowedBackstores (%s)",
			pvoptions.OptBackstoreServer, clip(backstore), hp, strings.Join(c.AllowedBackstores, ", "))
	}
	if scheme == "http" && !c.AllowInsecureHTTP {
		return fmt.Errorf("option %s %q resolves to %s: plain http would send the Datera credentials unencrypted, "+
			"and allowInsecureHTTP is false in %s (https only: use port %d or an https:// URL)",
			pvoptions.OptBackstoreServer, clip(backstore), endpoint, c.describePath(), datera.HTTPSPort)
	}
	return nil
}
