package appapi

import (
	"encoding/json"
	"fmt"
	"time"
)

// App is one application: the original Stellar's application JSON.
type App struct {
	// Name is the application's name, a DNS label.
	Name string `json:"name"`
	// Labels are "key=value" pairs describing the app.
	Labels []string `json:"labels,omitempty"`
	// Services are the app's services; at least one.
	Services []Service `json:"services"`
}

// Service is one service of an app: an image run as N instances.
type Service struct {
	// Name is the service's name, a DNS label unique in the app.
	Name string `json:"name"`
	// Image is the image reference ("docker.io/library/nginx:alpine").
	Image string `json:"image"`
	// Runtime is the containerd runtime (default [apps] runtime).
	Runtime string `json:"runtime,omitempty"`
	// Snapshotter is the containerd snapshotter (default [apps] snapshotter).
	Snapshotter string `json:"snapshotter,omitempty"`
	// Process overrides the image's process.
	Process Process `json:"process"`
	// Labels are "key=value" pairs set on the containers.
	Labels []string `json:"labels,omitempty"`
	// Network attaches the instances to the node's bridge through CNI
	// (default true); false runs them in the host's network namespace.
	Network *bool `json:"network,omitempty"`
	// Mounts are added to the container.
	Mounts []Mount `json:"mounts,omitempty"`
	// Resources limit each instance.
	Resources Resources `json:"resources"`
	// Instances is how many copies run (default 1). "replicas" is accepted
	// as the same key on input.
	Instances *int `json:"instances,omitempty"`
	// Replicas is accepted on input for Instances; Normalize moves it there.
	Replicas *int `json:"replicas,omitempty"`
	// Global runs one instance on every eligible node instead.
	Global bool `json:"global,omitempty"`
	// Placement restricts the nodes the service may run on.
	Placement Placement `json:"placement_preference"`
	// Endpoints are published for DNS SRV records and the proxy.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// Health is the instance health check (none: running is healthy).
	Health *Health `json:"health,omitempty"`
	// Ports publish container ports on the node (CNI portmap).
	Ports []Port `json:"ports,omitempty"`
	// Update is the rolling-update policy.
	Update Update `json:"update"`
}

// Process is what runs in the container.
type Process struct {
	UID  int      `json:"uid"`
	GID  int      `json:"gid"`
	Args []string `json:"args,omitempty"`
	Env  []string `json:"env,omitempty"`
	Cwd  string   `json:"cwd,omitempty"`
}

// Mount is one mount of the container.
type Mount struct {
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Destination string   `json:"destination"`
	Options     []string `json:"options,omitempty"`
}

// Resources are the limits of one instance.
type Resources struct {
	// CPU in cores (CFS period 100 ms); 0 = no limit.
	CPU float64 `json:"cpu,omitempty"`
	// Memory in MiB; 0 = no limit.
	Memory int64 `json:"memory,omitempty"`
}

// Placement restricts where a service runs.
type Placement struct {
	// NodeIDs, when set, are the only nodes allowed.
	NodeIDs []string `json:"node_ids,omitempty"`
	// Labels must all match the node's labels (AND).
	Labels map[string]string `json:"labels,omitempty"`
}

// Endpoint is a named port of the service.
type Endpoint struct {
	Service  string `json:"service"`
	Protocol string `json:"protocol"`
	Host     string `json:"host,omitempty"`
	// Path, when set, routes only requests under this path prefix (the
	// proxy matches Host, then the longest Path).
	Path string `json:"path,omitempty"`
	Port int    `json:"port"`
	TLS  bool   `json:"tls,omitempty"`
}

// Health is an instance health check: exactly one of HTTP, TCP, Exec.
type Health struct {
	// HTTP is a path probed with GET; 2xx and 3xx are healthy.
	HTTP string `json:"http,omitempty"`
	// TCP probes a connection to Port.
	TCP bool `json:"tcp,omitempty"`
	// Exec runs a command in the container; exit 0 is healthy.
	Exec     []string `json:"exec,omitempty"`
	Port     int      `json:"port,omitempty"`
	Interval Duration `json:"interval,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
	Retries  int      `json:"retries,omitempty"`
}

// Port publishes a container port on the node.
type Port struct {
	Host      int    `json:"host"`
	Container int    `json:"container"`
	Protocol  string `json:"protocol,omitempty"`
}

// Update is the rolling-update policy of a service.
type Update struct {
	// Parallel is how many instances are replaced at once (default 1).
	Parallel int `json:"parallel,omitempty"`
	// Delay is the pause between batches.
	Delay Duration `json:"delay,omitempty"`
	// AutoRevert puts the previous spec back when an updated instance
	// does not turn healthy.
	AutoRevert bool `json:"auto_revert,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("5s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes "5s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "5s" (or a number of seconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n float64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration must be a string like \"5s\"")
		}
		*d = Duration(n * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// NetworkEnabled reports whether the service is attached to the bridge.
func (s *Service) NetworkEnabled() bool { return s.Network == nil || *s.Network }

// Count returns the number of instances (after Normalize).
func (s *Service) Count() int {
	if s.Instances == nil {
		return 1
	}
	return *s.Instances
}

// Service returns the named service, or nil.
func (a *App) Service(name string) *Service {
	for i := range a.Services {
		if a.Services[i].Name == name {
			return &a.Services[i]
		}
	}
	return nil
}

// Record is the value stored at apps/<name> in the cluster state.
type Record struct {
	// Spec is the desired application.
	Spec App `json:"spec"`
	// Previous is the spec before the last update (auto_revert).
	Previous *App `json:"previous,omitempty"`
	// Generation counts the spec's changes.
	Generation int `json:"generation"`
	// Restarts counts restart requests per service: a change restarts its
	// instances (rolling).
	Restarts map[string]int `json:"restarts,omitempty"`
	// Reverted says why the last update was reverted, if it was.
	Reverted string `json:"reverted,omitempty"`
	// Updated is when the record was written.
	Updated time.Time `json:"updated"`
}
