package datera

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Conventional Datera management ports (HTTP and HTTPS REST API).
const (
	HTTPPort  = 7717
	HTTPSPort = 7718
)

// APIVersion is the REST API version this client speaks; it is the first path segment.
const APIVersion = "v2.2"

// Defaults applied by New for zero Config fields.
const (
	DefaultTenant           = "/root"
	DefaultDriverName       = "petfabric"
	DefaultMaxResponseBytes = 4 << 20
	DefaultRequestTimeout   = 30 * time.Second
	DefaultPollInterval     = time.Second
)

// Config configures a Client. Only Endpoint, Username and Password are required.
type Config struct {
	// Endpoint is the management API base URL: https://host:7718 or http://host:7717. A path, if
	// any, is ignored; the client appends /v2.2/... itself. EndpointForBackstore derives it from
	// a PersistentVolume's backstoreServer option.
	Endpoint string
	// Username and Password are the login credentials. The password is never logged.
	Username string
	Password string
	// Tenant selects the tenant via the "tenant" header: "" means /root, "x" means /root/x.
	Tenant string

	// CACertPEM and RootCAs add trusted CAs for https endpoints (both may be given). When neither
	// is set the system roots are used.
	CACertPEM []byte
	RootCAs   *x509.CertPool
	// InsecureSkipVerify disables server certificate verification. Only for explicit opt-in.
	InsecureSkipVerify bool

	// DriverName is sent in the Datera-Driver header (default "petfabric").
	DriverName string
	// HTTPClient, when set, is used as is; the TLS options above must then be left empty because
	// they could not be applied to it.
	HTTPClient *http.Client

	// Retry tunes the backoff for 503, "still initializing" 500 and connection errors.
	Retry Retry
	// RequestTimeout bounds one HTTP attempt (default 30s); the caller's context bounds the whole
	// operation including retries.
	RequestTimeout time.Duration
	// PollInterval is the period of WaitAvailable (default 1s).
	PollInterval time.Duration
	// MaxResponseBytes limits how much of a response body is read (default 4 MiB); a larger
	// response is an error rather than a memory hazard.
	MaxResponseBytes int64

	// Logger receives structured logs (default: discard). Tokens and passwords never reach it.
	Logger *slog.Logger
}

// Retry is a capped exponential backoff: the n-th retry (n = 1, 2, …) waits a random
// duration in [d/2, d] where d = min(Max, Initial·2ⁿ⁻¹).
type Retry struct {
	// Initial is the first backoff (default 250ms).
	Initial time.Duration
	// Max caps a single backoff (default 8s).
	Max time.Duration
	// Attempts is the total number of attempts per request including the first (default 10).
	Attempts int
}

func (r Retry) withDefaults() Retry {
	if r.Initial <= 0 {
		r.Initial = 250 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 8 * time.Second
	}
	if r.Max < r.Initial {
		r.Max = r.Initial
	}
	if r.Attempts <= 0 {
		r.Attempts = 10
	}
	return r
}

// LogValue keeps the password out of logs should a Config ever be logged.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint),
		slog.String("username", c.Username),
		slog.String("password", redacted(c.Password)),
		slog.String("tenant", c.Tenant),
		slog.Bool("insecureSkipVerify", c.InsecureSkipVerify),
	)
}

// String keeps the password out of fmt output.
func (c Config) String() string {
	return fmt.Sprintf("datera.Config{Endpoint:%q Username:%q Password:%s Tenant:%q}",
		c.Endpoint, c.Username, redacted(c.Password), c.Tenant)
}

func redacted(secret string) string {
	if secret == "" {
		return ""
	}
	return "(redacted)"
}

// NormalizeTenant returns the tenant path the API expects: "" → "/root", "x" → "/root/x",
// "/root/x" unchanged.
func NormalizeTenant(t string) string {
	t = strings.TrimSpace(t)
	switch {
	case t == "" || t == "/root" || t == "root":
		return DefaultTenant
	case strings.HasPrefix(t, "/root/"):
		return t
	case strings.HasPrefix(t, "root/"):
		return "/" + t
	default:
		return DefaultTenant + "/" + strings.TrimPrefix(t, "/")
	}
}

// EndpointForBackstore turns a PersistentVolume's backstoreServer ("host:port") into the API
// endpoint URL: port 7718 means https, 7717 means http, a bare host means https on 7718. A value
// that already is an http(s) URL is returned unchanged. Any other port is an error because the
// scheme cannot be inferred.
func EndpointForBackstore(backstore string) (string, error) {
	backstore = strings.TrimSpace(backstore)
	if backstore == "" {
		return "", fmt.Errorf("backstore server is empty")
	}
	if strings.HasPrefix(backstore, "http://") || strings.HasPrefix(backstore, "https://") {
		u, err := url.Parse(backstore)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("backstore server %q is not a valid URL", backstore)
		}
		return backstore, nil
	}
	host, port, err := net.SplitHostPort(backstore)
	if err != nil {
		// No port: a bare host name or IP (IPv6 literals must be bracketed to carry a port).
		if strings.ContainsAny(backstore, "/ ") {
			return "", fmt.Errorf("backstore server %q is not host[:port]", backstore)
		}
		h := backstore
		if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil && ip.To4() == nil {
			h = "[" + strings.Trim(h, "[]") + "]"
		}
		return "https://" + h + ":" + strconv.Itoa(HTTPSPort), nil
	}
	if host == "" {
		return "", fmt.Errorf("backstore server %q has no host", backstore)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("backstore server %q: bad port: %w", backstore, err)
	}
	hp := net.JoinHostPort(host, port)
	switch p {
	case HTTPSPort:
		return "https://" + hp, nil
	case HTTPPort:
		return "http://" + hp, nil
	default:
		return "", fmt.Errorf("backstore server %q: cannot infer http or https from port %d (use %d for https, %d for http, or give a URL)",
			backstore, p, HTTPSPort, HTTPPort)
	}
}
