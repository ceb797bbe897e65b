package datera

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Client talks to one Datera cluster as one user in one tenant. It is safe for concurrent use.
type Client struct {
	base        *url.URL // scheme://host:port
	username    string
	password    string
	tenant      string
	driver      string
	hc          *http.Client
	retry       Retry
	reqTimeout  time.Duration
	pollEvery   time.Duration
	maxResponse int64
	log         *slog.Logger

	// loginSlot admits one login at a time; waiting on it respects the caller's context.
	loginSlot chan struct{}
	mu        sync.Mutex // guards token and gen
	token     string
	gen       uint64 // incremented by every successful login
}

// New validates cfg and returns a Client. It does not contact the server: login is lazy.
func New(cfg Config) (*Client, error) {
	base, err := url.Parse(strings.TrimSpace(cfg.Endpoint))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return nil, fmt.Errorf("datera: endpoint %q must be an http:// or https:// URL (EndpointForBackstore converts host:port)", cfg.Endpoint)
	}
	if base.Host == "" {
		return nil, fmt.Errorf("datera: endpoint %q has no host", cfg.Endpoint)
	}
	base = &url.URL{Scheme: base.Scheme, Host: base.Host}
	if cfg.Username == "" || cfg.Password == "" {
		return nil, errors.New("datera: username and password are required")
	}

	hc := cfg.HTTPClient
	tlsOpts := len(cfg.CACertPEM) > 0 || cfg.RootCAs != nil || cfg.InsecureSkipVerify
	if hc != nil && tlsOpts {
		return nil, errors.New("datera: CACertPEM, RootCAs and InsecureSkipVerify cannot be applied to a caller-provided HTTPClient; configure its transport instead")
	}
	if hc == nil {
		tlsConf, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsConf
		tr.MaxIdleConnsPerHost = 16
		hc = &http.Client{Transport: tr}
	}
	hc = refusingRedirects(hc)

	c := &Client{
		base:        base,
		username:    cfg.Username,
		password:    cfg.Password,
		tenant:      NormalizeTenant(cfg.Tenant),
		driver:      cfg.DriverName,
		hc:          hc,
		retry:       cfg.Retry.withDefaults(),
		reqTimeout:  cfg.RequestTimeout,
		pollEvery:   cfg.PollInterval,
		maxResponse: cfg.MaxResponseBytes,
		log:         cfg.Logger,
		loginSlot:   make(chan struct{}, 1),
	}
	if c.driver == "" {
		c.driver = DefaultDriverName
	}
	if c.reqTimeout <= 0 {
		c.reqTimeout = DefaultRequestTimeout
	}
	if c.pollEvery <= 0 {
		c.pollEvery = DefaultPollInterval
	}
	if c.maxResponse <= 0 {
		c.maxResponse = DefaultMaxResponseBytes
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "datera", "endpoint", base.String(), "tenant", c.tenant)
	return c, nil
}

// refusingRedirects returns a copy of hc that never follows a redirect. net/http would
// re-send a 307/308's body (the login's username and password) and every header it does not
// know to be sensitive (Auth-Token among them) to whatever host the Location names, https→http
// included. The copy shares hc's Transport, Jar and Timeout; the caller's client is left as
// it was. The 3xx response itself reaches attempt, which turns it into an ErrRedirect.
func refusingRedirects(hc *http.Client) *http.Client {
	cp := *hc
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.InsecureSkipVerify {
		conf.InsecureSkipVerify = true // explicit opt-in only (Config.InsecureSkipVerify)
	}
	if cfg.RootCAs == nil && len(cfg.CACertPEM) == 0 {
		return conf, nil // system roots
	}
	pool := x509.NewCertPool()
	if cfg.RootCAs != nil {
		pool = cfg.RootCAs.Clone()
	}
	if len(cfg.CACertPEM) > 0 && !pool.AppendCertsFromPEM(cfg.CACertPEM) {
		return nil, errors.New("datera: CACertPEM holds no PEM certificate")
	}
	conf.RootCAs = pool
	return conf, nil
}

// Tenant returns the tenant path the client sends.
func (c *Client) Tenant() string { return c.tenant }

// Login logs in now, replacing any session. Other calls log in lazily; Login is for checking
// credentials early.
func (c *Client) Login(ctx context.Context) error {
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	_, _, err := c.login(ctx, gen, true)
	return err
}

// session returns the current token, logging in first when there is none.
func (c *Client) session(ctx context.Context) (string, uint64, error) {
	c.mu.Lock()
	tok, gen := c.token, c.gen
	c.mu.Unlock()
	if tok != "" {
		return tok, gen, nil
	}
	return c.login(ctx, gen, false)
}

// login replaces the session of generation stale. Logins are serialised; a caller that waited
// while another goroutine logged in reuses that token instead of logging in again, so concurrent
// 401s cost one login. force makes even a waiter log in (explicit Login).
func (c *Client) login(ctx context.Context, stale uint64, force bool) (string, uint64, error) {
	select {
	case c.loginSlot <- struct{}{}:
	case <-ctx.Done():
		return "", 0, fmt.Errorf("datera login: %w", ctx.Err())
	}
	defer func() { <-c.loginSlot }()

	c.mu.Lock()
	if !force && c.token != "" && c.gen != stale {
		tok, gen := c.token, c.gen
		c.mu.Unlock()
		return tok, gen, nil
	}
	c.token = "" // never send an expired token again, not even with /login
	c.mu.Unlock()

	start := time.Now()
	var key string
	err := c.do(ctx, request{
		method: http.MethodPut, path: "/login", noAuth: true,
		body: map[string]string{"name": c.username, "password": c.password},
		decode: func(status int, body []byte) error {
			var err error
			key, err = decodeLogin(status, body)
			return err
		},
	})
	if err != nil {
		c.log.WarnContext(ctx, "datera login failed", "username", c.username, "error", err)
		return "", 0, err
	}
	c.mu.Lock()
	c.token = key
	c.gen++
	gen := c.gen
	c.mu.Unlock()
	c.log.InfoContext(ctx, "datera login", "username", c.username, "duration", time.Since(start))
	return key, gen, nil
}
