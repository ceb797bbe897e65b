package datera

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// ErrRedirect: the server answered with a redirect. The client never follows one: it would
// carry the login body or the session token to another host.
var ErrRedirect = errors.New("datera: redirect refused")

// request is one logical API call; do turns it into one or more HTTP attempts.
type request struct {
	method string
	path   string // escaped, relative to /v2.2, e.g. /app_instances/x
	body   any    // JSON-encoded; nil sends no body
	out    any    // decoded from the envelope's data; nil ignores it
	noAuth bool
	// resolvePath is GET instead when a POST retried after a connection error meets 409: the
	// first attempt most likely created the resource (Datera's Python SDK does the same).
	resolvePath string
	// decode replaces envelope decoding (used by /login, whose body has no envelope).
	decode func(status int, body []byte) error
}

// apiPath joins escaped path segments: apiPath("initiators", iqn) = "/initiators/iqn...".
func apiPath(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// do runs a request with re-login and retries:
//   - 401 (not on /login itself): log in again (shared with concurrent callers) and replay once;
//     a second 401 is returned, never looped on.
//   - 503, a "still initializing" 500, connection errors: capped exponential backoff, at most
//     Retry.Attempts attempts, and never past ctx.
//   - anything else: returned as *APIError.
func (c *Client) do(ctx context.Context, r request) error {
	var payload []byte
	if r.body != nil {
		var err error
		if payload, err = json.Marshal(r.body); err != nil {
			return fmt.Errorf("datera %s %s: encoding body: %w", r.method, r.path, err)
		}
	}
	var (
		reauthed    bool
		connFailed  bool // an earlier attempt may have reached the server
		lastErr     error
		retriesDone int
		backoff     = c.retry.backoff()
	)
	for {
		token, gen := "", uint64(0)
		if !r.noAuth {
			var err error
			if token, gen, err = c.session(ctx); err != nil {
				return err
			}
		}
		status, body, err := c.attempt(ctx, r, payload, token, retriesDone+1)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return fmt.Errorf("datera %s %s: %w", r.method, r.path, ctx.Err())
			}
			if !retryableTransportError(err) {
				return fmt.Errorf("datera %s %s: %w", r.method, r.path, err)
			}
			connFailed = true
			lastErr = fmt.Errorf("datera %s %s: %w", r.method, r.path, err)

		case status == http.StatusUnauthorized && !r.noAuth:
			if reauthed {
				return decodeAPIError(r.method, r.path, status, body)
			}
			reauthed = true
			c.log.InfoContext(ctx, "datera session rejected, logging in again", "method", r.method, "path", r.path)
			if _, _, err := c.login(ctx, gen, false); err != nil {
				return fmt.Errorf("datera %s %s: re-login after 401: %w", r.method, r.path, err)
			}
			continue // the replay is not a retry: it does not wait nor count

		default:
			var derr error
			if r.decode != nil {
				derr = r.decode(status, body)
			} else {
				derr = decodeResponse(r.method, r.path, status, body, r.out)
			}
			var apiErr *APIError
			if !errors.As(derr, &apiErr) || !apiErr.retryable() {
				if r.method == http.MethodPost && connFailed && r.resolvePath != "" && errors.Is(derr, ErrConflict) {
					c.log.InfoContext(ctx, "datera POST retried after a connection error met 409; reading the resource it created",
						"path", r.path, "resolve", r.resolvePath)
					return c.do(ctx, request{method: http.MethodGet, path: r.resolvePath, out: r.out})
				}
				return derr
			}
			lastErr = derr
		}

		retriesDone++
		if retriesDone >= c.retry.Attempts {
			return fmt.Errorf("datera %s %s: giving up after %d attempts: %w", r.method, r.path, retriesDone, lastErr)
		}
		delay := backoff.Step()
		c.log.WarnContext(ctx, "datera request failed, retrying", "method", r.method, "path", r.path,
			"attempt", retriesDone, "backoff", delay, "error", lastErr)
		if err := sleep(ctx, delay); err != nil {
			return fmt.Errorf("datera %s %s: %w after %d attempts (last: %w)", r.method, r.path, err, retriesDone, lastErr)
		}
	}
}

// attempt performs one HTTP exchange and returns the status and the (size-limited) body.
func (c *Client) attempt(ctx context.Context, r request, payload []byte, token string, n int) (int, []byte, error) {
	u := *c.base
	rel, err := url.Parse("/" + APIVersion + r.path)
	if err != nil {
		return 0, nil, fmt.Errorf("bad path: %w", err)
	}
	u.Path, u.RawPath = rel.Path, rel.RawPath

	actx, cancel := context.WithTimeout(ctx, c.reqTimeout)
	defer cancel()
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, r.method, u.String(), body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	req.Header.Set("Datera-Driver", c.driver)
	if !r.noAuth {
		req.Header.Set("Auth-Token", token)
		req.Header.Set("tenant", c.tenant)
	}

	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.log.DebugContext(ctx, "datera request", "method", r.method, "path", r.path, "attempt", n,
			"duration", time.Since(start), "error", err)
		return 0, nil, err
	}
	defer resp.Body.Close()
	if err := redirectError(resp); err != nil {
		c.log.DebugContext(ctx, "datera request", "method", r.method, "path", r.path, "attempt", n,
			"status", resp.StatusCode, "duration", time.Since(start), "error", err)
		// Permanent: the next attempt would meet the same redirect.
		return 0, nil, &permanentError{err}
	}
	b, err := readBody(resp.Body, c.maxResponse)
	c.log.DebugContext(ctx, "datera request", "method", r.method, "path", r.path, "attempt", n,
		"status", resp.StatusCode, "duration", time.Since(start))
	if err != nil {
		if errors.Is(err, ErrBadResponse) {
			// Oversized: not a transport failure, and not worth retrying.
			return resp.StatusCode, nil, &permanentError{fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)}
		}
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// redirectError turns a redirect (a 3xx with a Location; the client's CheckRedirect hands it
// back unfollowed) into an ErrRedirect that names the status and where it pointed.
func redirectError(resp *http.Response) error {
	if resp.StatusCode < 300 || resp.StatusCode > 399 || resp.Header.Get("Location") == "" {
		return nil
	}
	loc := resp.Header.Get("Location")
	if u, err := resp.Location(); err == nil {
		loc = u.Redacted() // no userinfo password in errors and logs
	}
	return fmt.Errorf("%w: HTTP %d %s to Location %q: the client sends credentials only to the configured endpoint; configure the address the API answers on",
		ErrRedirect, resp.StatusCode, http.StatusText(resp.StatusCode), loc)
}

// permanentError is a failure of one attempt that retrying cannot cure.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// retryableTransportError reports failures to exchange a request that another attempt may cure:
// refused, reset or dropped connections and timeouts. TLS verification failures are permanent,
// and so is a response the client refused to read (permanentError).
func retryableTransportError(err error) bool {
	var perm *permanentError
	if errors.As(err, &perm) {
		return false
	}
	var (
		certErr     *tls.CertificateVerificationError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
		recordErr   tls.RecordHeaderError
	)
	return !(errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) ||
		errors.As(err, &invalidCert) || errors.As(err, &recordErr))
}

// backoff is the request's retry schedule, as apimachinery's wait.Backoff (the mechanism the
// node agent uses too): retry n waits a uniform random duration in [d/2, d] with
// d = min(Max, Initial·2ⁿ⁻¹). wait.Backoff jitters upwards (a step of s waits s·(1+j·U[0,1))),
// so it runs on half the durations with jitter 1: Max stays a true cap on every wait, and the
// spread keeps a fleet of clients that met the same 503 from retrying in step. Steps is
// unlimited here; Attempts bounds the retries and ctx the time.
func (r Retry) backoff() *wait.Backoff {
	return &wait.Backoff{Duration: r.Initial / 2, Factor: 2, Jitter: 1, Cap: r.Max / 2, Steps: math.MaxInt32}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
