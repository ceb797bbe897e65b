package fake

import (
	"fmt"
	"regexp"
)

// Schema rules (the v2.1 API's JSON schema for names and IQNs). Go's RE2 has no lookahead, so the
// initiator id's (?=.{16,223}$) is a separate length check.
var (
	reName          = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_\-.]{2,63}$`)
	reUUID          = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	reIQN           = regexp.MustCompile(`^iqn\.[0-9]{4}-[0-1][0-9]\.[^/]*\.[^/]*$`)
	reEUI           = regexp.MustCompile(`^eui\.[0-9A-Fa-f]{16}$`)
	reInitiatorName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_\-\s.]{2,127}$`)
	reLoginName     = regexp.MustCompile(`^[a-zA-Z0-9_]{3,32}$`)
	rePassword      = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_\-.]{2,127}$`)
)

const (
	minSize, maxSize         = 1, 32768
	minReplica, maxReplica   = 1, 5
	maxIOPS, maxBandwidthKiB = 10_000_000, 10_240_000
	chapMinLen, chapMaxLen   = 12, 16
)

var (
	createModes    = set("normal", "openstack", "internal", "docker", "cloudstack", "kubernetes", "mesos", "vmware_vro", "vmware_vcenter", "docker_swarm")
	aclModes       = set("allow_all", "deny_all")
	adminStates    = set("online", "offline")
	placementModes = set("hybrid", "single_flash", "all_flash")
	authTypes      = set("none", "chap", "mchap")
)

func set(vals ...string) map[string]bool {
	m := make(map[string]bool, len(vals))
	for _, v := range vals {
		m[v] = true
	}
	return m
}

// checks accumulates schema violations so one 422 lists them all, as Datera's "errors" does.
type checks []string

func (c *checks) pattern(field, value string, re *regexp.Regexp) {
	if !re.MatchString(value) {
		*c = append(*c, fmt.Sprintf("%s: %q does not match %s", field, value, re.String()))
	}
}

func (c *checks) required(field string, present bool) {
	if !present {
		*c = append(*c, fmt.Sprintf("%s is required", field))
	}
}

func (c *checks) enum(field, value string, allowed map[string]bool) {
	if !allowed[value] {
		*c = append(*c, fmt.Sprintf("%s: %q is not one of the allowed values", field, value))
	}
}

func (c *checks) rangeInt(field string, v, lo, hi int64) {
	if v < lo || v > hi {
		*c = append(*c, fmt.Sprintf("%s: %d is outside %d-%d", field, v, lo, hi))
	}
}

func (c *checks) appInstanceName(field, v string) {
	if !reName.MatchString(v) && !reUUID.MatchString(v) {
		*c = append(*c, fmt.Sprintf("%s: %q does not match (^<uuid>$)|(%s)", field, v, reName.String()))
	}
}

func (c *checks) initiatorID(field, v string) {
	if !((len(v) >= 16 && len(v) <= 223 && reIQN.MatchString(v)) || reEUI.MatchString(v)) {
		*c = append(*c, fmt.Sprintf("%s: %q is not an IQN of 16-223 characters nor an EUI-64", field, v))
	}
}

func (c *checks) err() *apiError {
	if len(*c) == 0 {
		return nil
	}
	return validationFailed((*c)...)
}
