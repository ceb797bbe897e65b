package flex

import (
	"encoding/json"
	"io"
	"slices"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// DriverName is the FlexVolume driver name (the PV contract's, pvoptions.Driver); kubelet finds
// it at <plugin dir>/datera~iscsi/iscsi.
const DriverName = pvoptions.Driver

// Status values of a FlexVolume reply, spelled exactly as kubelet compares them.
const (
	StatusSuccess      = "Success"
	StatusFailure      = "Failure"
	StatusNotSupported = "Not supported"
)

// Capabilities are announced by init. Keys left out would default to true in kubelet, so every
// one is sent explicitly.
type Capabilities struct {
	Attach           bool `json:"attach"`
	SELinuxRelabel   bool `json:"selinuxRelabel"`
	SupportsMetrics  bool `json:"supportsMetrics"`
	FSGroup          bool `json:"fsGroup"`
	RequiresFSResize bool `json:"requiresFSResize"`
}

// DriverCapabilities: attach happens in mount, on the node, where the secretRef values arrive.
var DriverCapabilities = Capabilities{
	Attach:           false,
	SELinuxRelabel:   true,
	SupportsMetrics:  true,
	FSGroup:          true,
	RequiresFSResize: false,
}

// Reply is the one JSON object a call prints.
type Reply struct {
	Status       string        `json:"status"`
	Message      string        `json:"message,omitempty"`
	Capabilities *Capabilities `json:"capabilities,omitempty"`
}

// ExitCode is 0 for Success and Not supported, 1 for Failure (the convention kubelet's e2e
// drivers and Oracle's driver follow; kubelet itself reads the JSON).
func (r Reply) ExitCode() int {
	if r.Status == StatusFailure {
		return 1
	}
	return 0
}

// Write prints the reply as a single JSON object followed by a newline.
func (r Reply) Write(w io.Writer) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func success(msg string) Reply { return Reply{Status: StatusSuccess, Message: msg} }

func failure(err error) Reply { return Reply{Status: StatusFailure, Message: err.Error()} }

func notSupported(verb string) Reply {
	return Reply{Status: StatusNotSupported, Message: "datera/iscsi does not implement " + verb + " (attach: false; all work happens in mount and unmount)"}
}

// Implemented verbs.
const (
	VerbInit    = "init"
	VerbMount   = "mount"
	VerbUnmount = "unmount"
)

// unsupportedVerbs are the other verbs kubelet and the controller-manager call (current and
// pre-1.8 forms). Each gets "Not supported", which makes kubelet use its default.
var unsupportedVerbs = []string{
	"attach", "detach", "waitforattach", "isattached", "mountdevice", "unmountdevice",
	"getvolumename", "expandvolume", "expandfs", "getdevicemountpath", "waitfordetach",
}

// IsFlexVolumeVerb reports whether kubelet or the controller-manager may call the driver with
// this verb.
func IsFlexVolumeVerb(verb string) bool {
	return verb == VerbInit || verb == VerbMount || verb == VerbUnmount || slices.Contains(unsupportedVerbs, verb)
}

// UnsupportedVerbs returns the FlexVolume verbs answered "Not supported".
func UnsupportedVerbs() []string { return slices.Clone(unsupportedVerbs) }
