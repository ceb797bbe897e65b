// Package agent is the node reachability agent (`flex agent`, run by the node DaemonSet).
//
// Every interval (with jitter) it probes each configured backstore's iSCSI portals with a
// full discovery session under the node's initiator name (pkg/iscsi.Probe), reads which
// volumes the FlexVolume driver has attached on the node, and publishes both as the node's
// report Lease (format: pkg/placement.Report). The scheduler extender reads those Leases.
//
// Inputs:
//   - the backstores file (--backstores, YAML or JSON, example below): each backstoreServer
//     (the PV option, host:port of the Datera management API) mapped to its iSCSI portals
//     and optional discovery CHAP credentials, given as file paths so secrets come from
//     mounted Secrets and never sit in the config or the logs;
//   - the driver's state directory (--state-dir, default /var/lib/petfabric/flex): the flex
//     driver keeps one <volumeID>.json record per volume it attached on this node (the
//     record's contract, and its reading here, is pkg/flexstate's: flexstate.Attached). Each
//     such file counts as one attached volume, except a record whose "phase" is "detached"
//     (the driver has logged out and removed the ACL entry and is about to delete the file).
//     Files starting with "." are the driver's temporary files and are skipped. A record
//     that cannot be read (or of a newer version) still counts: for ReadWriteOnce
//     protection it is safer to claim a volume than to drop it;
//   - the initiator name: --initiator, or "InitiatorName=" in --initiator-file (default
//     /etc/iscsi/initiatorname.iscsi, the file open-iscsi and the driver use).
//
// The backstores file:
//
//	backstores:
//	  "172.16.0.10:7717":
//	    portals: ["10.1.1.5:3260", "10.1.1.6:3260"]
//	    discoveryCHAP:                      # optional
//	      usernameFile: /etc/petfabric/chap/username
//	      passwordFile: /etc/petfabric/chap/password
//	      targetUsernameFile: /etc/petfabric/chap/target-username   # mutual CHAP, optional
//	      targetPasswordFile: /etc/petfabric/chap/target-password
//
// The Lease write is decoupled from probing: probing continues on its schedule while the
// apiserver is unreachable, and the newest report is written as soon as it is back.
package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/pkg/iscsi"
)

// BackstoresFile is the --backstores file.
type BackstoresFile struct {
	Backstores map[string]BackstoreConfig `json:"backstores"`
}

// BackstoreConfig is one backstore's portals and discovery credentials.
type BackstoreConfig struct {
	// Portals are the iSCSI portals (ip:port; the port defaults to 3260).
	Portals []string `json:"portals"`
	// DiscoveryCHAP, when set, authenticates discovery sessions.
	DiscoveryCHAP *CHAPFiles `json:"discoveryCHAP,omitempty"`
}

// CHAPFiles names the files holding CHAP credentials (read at every round, so rotated
// Secrets take effect without a restart).
type CHAPFiles struct {
	UsernameFile       string `json:"usernameFile"`
	PasswordFile       string `json:"passwordFile"`
	TargetUsernameFile string `json:"targetUsernameFile,omitempty"`
	TargetPasswordFile string `json:"targetPasswordFile,omitempty"`
}

// Backstore is a validated backstore entry.
type Backstore struct {
	Server  string
	Portals []string
	CHAP    *CHAPFiles
}

// LoadBackstores reads and validates the backstores file.
func LoadBackstores(path string) ([]Backstore, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read backstores file: %w", err)
	}
	return ParseBackstores(b)
}

// ParseBackstores parses the YAML or JSON backstores document. Unknown fields are errors:
// a misspelt "portal" must not silently mean "no portals".
func ParseBackstores(doc []byte) ([]Backstore, error) {
	var f BackstoresFile
	if err := yaml.UnmarshalStrict(doc, &f); err != nil {
		return nil, fmt.Errorf("parse backstores file: %w", err)
	}
	if len(f.Backstores) == 0 {
		return nil, errors.New("backstores file lists no backstores")
	}
	out := make([]Backstore, 0, len(f.Backstores))
	for server, c := range f.Backstores {
		if _, _, err := net.SplitHostPort(server); err != nil {
			return nil, fmt.Errorf("backstore %q: the key must be the backstoreServer host:port of the PVs: %w", server, err)
		}
		if len(c.Portals) == 0 {
			return nil, fmt.Errorf("backstore %s: no portals", server)
		}
		seen := map[string]bool{}
		var portals []string
		for _, p := range c.Portals {
			norm, err := normalizePortal(p)
			if err != nil {
				return nil, fmt.Errorf("backstore %s: %w", server, err)
			}
			if !seen[norm] {
				seen[norm] = true
				portals = append(portals, norm)
			}
		}
		if ch := c.DiscoveryCHAP; ch != nil {
			if ch.UsernameFile == "" || ch.PasswordFile == "" {
				return nil, fmt.Errorf("backstore %s: discoveryCHAP needs usernameFile and passwordFile", server)
			}
			if (ch.TargetUsernameFile == "") != (ch.TargetPasswordFile == "") {
				return nil, fmt.Errorf("backstore %s: mutual discoveryCHAP needs both targetUsernameFile and targetPasswordFile", server)
			}
		}
		out = append(out, Backstore{Server: server, Portals: portals, CHAP: c.DiscoveryCHAP})
	}
	slices.SortFunc(out, func(a, b Backstore) int { return strings.Compare(a.Server, b.Server) })
	return out, nil
}

// normalizePortal returns ip:port with the default iSCSI port, as the report keys portals.
func normalizePortal(p string) (string, error) {
	host, port, err := net.SplitHostPort(p)
	if err != nil {
		host, port = strings.Trim(p, "[]"), "3260"
	}
	if host == "" {
		return "", fmt.Errorf("portal %q has no host", p)
	}
	return net.JoinHostPort(host, port), nil
}

// credentials reads the CHAP files. Errors name the file, never its content.
func (c *CHAPFiles) credentials() (*iscsi.DiscoveryCHAP, error) {
	if c == nil {
		return nil, nil
	}
	read := func(path string) (string, error) {
		if path == "" {
			return "", nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read CHAP file: %w", err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("CHAP file %s is empty", path)
		}
		return v, nil
	}
	var creds iscsi.DiscoveryCHAP
	var err error
	if creds.Username, err = read(c.UsernameFile); err != nil {
		return nil, err
	}
	if creds.Secret, err = read(c.PasswordFile); err != nil {
		return nil, err
	}
	if creds.TargetUsername, err = read(c.TargetUsernameFile); err != nil {
		return nil, err
	}
	if creds.TargetSecret, err = read(c.TargetPasswordFile); err != nil {
		return nil, err
	}
	return &creds, nil
}

// ReadInitiatorName reads "InitiatorName=<iqn>" from an open-iscsi initiatorname file.
func ReadInitiatorName(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read initiator name: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "InitiatorName="); ok && v != "" {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s has no InitiatorName= line", path)
}
