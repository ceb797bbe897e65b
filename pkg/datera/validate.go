package datera

import (
	"regexp"
)

// Validation rules of the API's JSON schema (names, IQNs, sizes). Checking them before sending turns
// a server 422 into a clear local error and saves a round trip.
var (
	nameRE          = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_\-.]{2,63}$`)
	uuidRE          = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	iqnRE           = regexp.MustCompile(`^iqn\.[0-9]{4}-[0-1][0-9]\.[^/]*\.[^/]*$`)
	euiRE           = regexp.MustCompile(`^eui\.[0-9A-Fa-f]{16}$`)
	initiatorNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_\-\s.]{2,127}$`)
)

// Ranges of the API schema.
const (
	MinSizeGiB      = 1
	MaxSizeGiB      = 32768
	MinReplicaCount = 1
	MaxReplicaCount = 5
	MaxIOPS         = 10_000_000
	MaxBandwidthKiB = 10_240_000
)

// ValidateAppInstanceName checks an app_instance name: 3–64 characters of letters, digits, "_",
// "-", ".", starting with a letter or "_" (a bare UUID is also accepted, as the API does).
func ValidateAppInstanceName(name string) error {
	if nameRE.MatchString(name) || uuidRE.MatchString(name) {
		return nil
	}
	return &ValidationError{Field: "app_instance name", Value: quote(name),
		Reason: "must match ^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$"}
}

// ValidateName checks a storage_instance, volume, app_template or ip_pool name.
func ValidateName(kind, name string) error {
	if nameRE.MatchString(name) {
		return nil
	}
	return &ValidationError{Field: kind + " name", Value: quote(name),
		Reason: "must match ^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$"}
}

// ValidateInitiatorID checks an initiator id: an IQN of 16–223 characters or an EUI-64.
func ValidateInitiatorID(id string) error {
	if (len(id) >= 16 && len(id) <= 223 && iqnRE.MatchString(id)) || euiRE.MatchString(id) {
		return nil
	}
	return &ValidationError{Field: "initiator id", Value: quote(id),
		Reason: "must be an IQN (iqn.yyyy-mm.naming-authority:unique, 16-223 characters) or eui.<16 hex>"}
}

func validateInitiatorLabel(name string) error {
	if initiatorNameRE.MatchString(name) {
		return nil
	}
	return &ValidationError{Field: "initiator name", Value: quote(name),
		Reason: `must match ^[a-zA-Z_][a-zA-Z0-9_\-\s.]{2,127}$`}
}

// ValidateSize checks a volume size in GiB.
func ValidateSize(gib int64) error {
	if gib < MinSizeGiB || gib > MaxSizeGiB {
		return &ValidationError{Field: "size", Value: gib, Reason: "must be 1-32768 GiB"}
	}
	return nil
}

// ValidateReplicaCount checks a replica count.
func ValidateReplicaCount(n int) error {
	if n < MinReplicaCount || n > MaxReplicaCount {
		return &ValidationError{Field: "replica_count", Value: n, Reason: "must be 1-5"}
	}
	return nil
}

func quote(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return `"` + s + `"`
}
