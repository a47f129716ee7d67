package appapi

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Instance statuses.
const (
	StatusCreated    = "created"
	StatusRunning    = "running"
	StatusRestarting = "restarting" // waiting out its backoff
	StatusStopped    = "stopped"
	StatusFailed     = "failed"   // cannot be created (image, mount, ...)
	StatusFetching   = "fetching" // its image is being fetched from a peer
)

// Health states.
const (
	HealthUnknown   = "unknown"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Instance is one running copy of a service, published by the node that
// runs it at nodes/<node>/instances/<app>/<service>/<index>.
type Instance struct {
	App         string    `json:"app"`
	Service     string    `json:"service"`
	Index       int       `json:"index"`
	Node        string    `json:"node"`
	ContainerID string    `json:"container_id"`
	Image       string    `json:"image"`
	IP          string    `json:"ip,omitempty"`
	Ports       []Port    `json:"ports,omitempty"`
	Status      string    `json:"status"`
	Restarts    int       `json:"restarts"`
	Health      string    `json:"health"`
	PID         uint32    `json:"pid,omitempty"`
	SpecHash    string    `json:"spec_hash"`
	Error       string    `json:"error,omitempty"`
	Started     time.Time `json:"started,omitzero"`
	Updated     time.Time `json:"updated"`
}

// Name is "<index>.<service>.<app>", the instance's host name and DNS name.
func (i Instance) Name() string { return InstanceName(i.App, i.Service, i.Index) }

// InstanceName is "<index>.<service>.<app>".
func InstanceName(app, service string, index int) string {
	return fmt.Sprintf("%d.%s.%s", index, service, app)
}

// Decline is written at nodes/<node>/declined/<app>/<service> by a node that
// cannot run the service; placement skips the node for it.
type Decline struct {
	Reason string `json:"reason"`
	// SpecHash is the service spec declined: a changed spec is tried again.
	SpecHash string    `json:"spec_hash"`
	Updated  time.Time `json:"updated"`
}

// Schedule states of a node.
const (
	Schedulable = ""
	Cordoned    = "cordon"
	Drained     = "drain"
)

// Schedule is written at schedule/<node> by `sctl node cordon|drain|uncordon`.
type Schedule struct {
	State   string    `json:"state"`
	Updated time.Time `json:"updated"`
}

// Key helpers for the cluster state.
const (
	AppsPrefix     = "apps/"
	SchedulePrefix = "schedule/"
	NodesPrefix    = "nodes/"
)

// AppKey is apps/<app>.
func AppKey(app string) string { return AppsPrefix + app }

// InstanceKey is nodes/<node>/instances/<app>/<service>/<index>.
func InstanceKey(node, app, service string, index int) string {
	return fmt.Sprintf("nodes/%s/instances/%s/%s/%d", node, app, service, index)
}

// DeclineKey is nodes/<node>/declined/<app>/<service>.
func DeclineKey(node, app, service string) string {
	return fmt.Sprintf("nodes/%s/declined/%s/%s", node, app, service)
}

// ScheduleKey is schedule/<node>.
func ScheduleKey(node string) string { return SchedulePrefix + node }

// ParseNodeKey splits nodes/<node>/<kind>/<rest...>.
func ParseNodeKey(key string) (node, kind string, rest []string, ok bool) {
	parts := strings.Split(key, "/")
	if len(parts) < 3 || parts[0] != "nodes" {
		return "", "", nil, false
	}
	return parts[1], parts[2], parts[3:], true
}

// ParseInstanceKey reads nodes/<node>/instances/<app>/<service>/<index>.
func ParseInstanceKey(key string) (node, app, service string, index int, ok bool) {
	node, kind, rest, ok := ParseNodeKey(key)
	if !ok || kind != "instances" || len(rest) != 3 {
		return "", "", "", 0, false
	}
	n, err := strconv.Atoi(rest[2])
	if err != nil || n < 0 {
		return "", "", "", 0, false
	}
	return node, rest[0], rest[1], n, true
}

// AppStatus is the answer of GET /v1/apps/{name}: the record and every
// published instance.
type AppStatus struct {
	Record
	Version   string     `json:"version"`
	Instances []Instance `json:"instances"`
}

// AppSummary is one line of GET /v1/apps.
type AppSummary struct {
	Name     string   `json:"name"`
	Services []string `json:"services"`
	Version  string   `json:"version"`
}

// PutResult is the answer of a change to an app.
type PutResult struct {
	Name     string   `json:"name"`
	Version  string   `json:"version"`
	Warnings []string `json:"warnings,omitempty"`
}

// Scale is the body of POST /v1/apps/{name}/services/{service}/scale.
type Scale struct {
	Instances int `json:"instances"`
}

// Image is one image in containerd's namespace.
type Image struct {
	Name    string    `json:"name"`
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

// LogLine is one line of GET /v1/apps/{name}/logs (NDJSON).
type LogLine struct {
	Time     time.Time `json:"time"`
	Instance string    `json:"instance"`
	Node     string    `json:"node"`
	Stream   string    `json:"stream"`
	Message  string    `json:"message"`
}

// ImagesKey is nodes/<node>/images: the images that node holds, so a node
// that lacks one knows which peers to fetch it from.
func ImagesKey(node string) string { return NodesPrefix + node + "/images" }

// NodeImages is the value of nodes/<node>/images.
type NodeImages struct {
	Images []ImageRef `json:"images"`
}

// ImageRef names one image a node holds.
type ImageRef struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
}

// Has reports whether the list holds ref.
// Digest is the digest published for ref ("" when it is not listed).
func (n NodeImages) Digest(ref string) string {
	for _, im := range n.Images {
		if im.Name == ref {
			return im.Digest
		}
	}
	return ""
}

func (n NodeImages) Has(ref string) bool {
	for _, im := range n.Images {
		if im.Name == ref {
			return true
		}
	}
	return false
}
