package datera

import (
	"context"
	"fmt"
	"net/http"
	"unicode/utf8"
)

// MaxMetadataBytes bounds the metadata one SetMetadata call sends (keys plus values). Datera's
// own CSI driver keeps an app_instance's metadata under 2048 characters because the server
// refuses more, so the client refuses before sending.
const MaxMetadataBytes = 2048

// GetMetadata reads an app_instance's metadata: a flat map of strings (empty when none was
// set). A missing app_instance is ErrNotFound.
func (c *Client) GetMetadata(ctx context.Context, appInstance string) (map[string]string, error) {
	if err := ValidateAppInstanceName(appInstance); err != nil {
		return nil, err
	}
	var md map[string]string
	path := apiPath("app_instances", appInstance, "metadata")
	if err := c.do(ctx, request{method: http.MethodGet, path: path, out: &md}); err != nil {
		return nil, fmt.Errorf("get metadata of app_instance %q: %w", appInstance, err)
	}
	if md == nil {
		md = map[string]string{}
	}
	return md, nil
}

// SetMetadata merges kv into an app_instance's metadata (keys not named keep their values) and
// returns the whole map as the server holds it after the merge. Datera has no compare-and-set
// on metadata: callers that must not overwrite a concurrent writer read the result back.
func (c *Client) SetMetadata(ctx context.Context, appInstance string, kv map[string]string) (map[string]string, error) {
	if err := ValidateAppInstanceName(appInstance); err != nil {
		return nil, err
	}
	if err := validateMetadata(kv); err != nil {
		return nil, err
	}
	var md map[string]string
	path := apiPath("app_instances", appInstance, "metadata")
	if err := c.do(ctx, request{method: http.MethodPut, path: path, body: kv, out: &md}); err != nil {
		return nil, fmt.Errorf("set metadata of app_instance %q: %w", appInstance, err)
	}
	if md == nil {
		md = map[string]string{}
	}
	c.log.InfoContext(ctx, "datera metadata set", "appInstance", appInstance, "keys", len(kv))
	return md, nil
}

func validateMetadata(kv map[string]string) error {
	if len(kv) == 0 {
		return &ValidationError{Field: "metadata", Value: "{}", Reason: "nothing to set"}
	}
	size := 0
	for k, v := range kv {
		if k == "" {
			return &ValidationError{Field: "metadata key", Value: `""`, Reason: "must not be empty"}
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return &ValidationError{Field: "metadata", Value: quote(k), Reason: "keys and values must be valid UTF-8"}
		}
		size += len(k) + len(v)
	}
	if size > MaxMetadataBytes {
		return &ValidationError{Field: "metadata", Value: size, Reason: fmt.Sprintf("keys and values must total at most %d bytes", MaxMetadataBytes)}
	}
	return nil
}
