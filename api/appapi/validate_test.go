package appapi

import (
	"errors"
	"strings"
	"testing"

	"stellar.dev/api/errdefs"
)

const good = `{ "name": "example", "labels": ["env=prod"],
  "services": [ { "name": "web", "image": "docker.io/library/nginx:alpine",
      "runtime": "io.containerd.runc.v2", "snapshotter": "overlayfs",
      "process": {"uid": 0, "gid": 0, "args": ["nginx", "-g", "daemon off;"], "env": ["A=b"]},
      "labels": ["env=prod"], "network": true,
      "mounts": [{"type": "bind", "source": "/mnt/data", "destination": "/data", "options": ["rbind"]}],
      "resources": {"cpu": 0.5, "memory": 128},
      "instances": 3,
      "placement_preference": {"node_ids": ["node-00"], "labels": {"env": "staging"}},
      "health": {"http": "/health", "port": 8080, "interval": "5s", "timeout": "2s", "retries": 3},
      "ports": [{"host": 8080, "container": 80, "protocol": "tcp"}],
      "update": {"parallel": 1, "delay": "5s", "auto_revert": true},
      "endpoints": [{"service": "web", "protocol": "http", "host": "example.com", "port": 8080, "tls": false}] } ] }`

func TestParse_designExample(t *testing.T) {
	a, warns, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Fatalf("warnings %v", warns)
	}
	s := a.Services[0]
	if s.Count() != 3 || s.Health.Interval.D().String() != "5s" || !s.NetworkEnabled() || s.Resources.Memory != 128 {
		t.Fatalf("parsed %+v", s)
	}
}

func TestParse_defaultsAndAliases(t *testing.T) {
	tests := []struct {
		name, spec string
		check      func(t *testing.T, a App, warns []string)
	}{
		{"default one instance", `{"name":"a","services":[{"name":"s","image":"x"}]}`, func(t *testing.T, a App, _ []string) {
			if a.Services[0].Count() != 1 || a.Services[0].Update.Parallel != 1 {
				t.Fatalf("%+v", a.Services[0])
			}
		}},
		{"replicas is instances", `{"name":"a","services":[{"name":"s","image":"x","replicas":4}]}`, func(t *testing.T, a App, _ []string) {
			if a.Services[0].Count() != 4 || a.Services[0].Replicas != nil {
				t.Fatalf("%+v", a.Services[0])
			}
		}},
		{"legacy runtime", `{"name":"a","services":[{"name":"s","image":"x","runtime":"io.containerd.runtime.v1.linux"}]}`, func(t *testing.T, a App, warns []string) {
			if a.Services[0].Runtime != DefaultRuntime || len(warns) != 1 || !strings.Contains(warns[0], LegacyRuntime) {
				t.Fatalf("%+v %v", a.Services[0], warns)
			}
		}},
		{"health defaults", `{"name":"a","services":[{"name":"s","image":"x","health":{"tcp":true,"port":80}}]}`, func(t *testing.T, a App, _ []string) {
			h := a.Services[0].Health
			if h.Interval.D() != DefaultHealthInterval || h.Timeout.D() != DefaultHealthTimeout || h.Retries != DefaultHealthRetries {
				t.Fatalf("%+v", h)
			}
		}},
		{"global", `{"name":"a","services":[{"name":"s","image":"x","global":true}]}`, func(t *testing.T, a App, _ []string) {
			if !a.Services[0].Global || a.Services[0].Instances != nil {
				t.Fatalf("%+v", a.Services[0])
			}
		}},
		{"port protocol defaults to tcp", `{"name":"a","services":[{"name":"s","image":"x","ports":[{"host":80,"container":8080}]}]}`, func(t *testing.T, a App, _ []string) {
			if a.Services[0].Ports[0].Protocol != "tcp" {
				t.Fatalf("%+v", a.Services[0].Ports)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, warns, err := Parse([]byte(tt.spec))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, a, warns)
		})
	}
}

func TestParse_badSpecs(t *testing.T) {
	svc := func(fields string) string {
		return `{"name":"app","services":[{"name":"web","image":"stellar.test/httpd:latest"` + fields + `}]}`
	}
	tests := []struct {
		name, spec, want string
	}{
		{"empty", ``, "app spec is empty"},
		{"not json", `name: x`, "decode app spec: syntax error"},
		{"trailing data", `{"name":"a","services":[{"name":"s","image":"x"}]} {}`, "data after the JSON value"},
		{"unknown key", `{"name":"a","servces":[]}`, `unknown field "servces"`},
		{"wrong type", `{"name":"a","services":[{"name":"s","image":"x","instances":"3"}]}`, `field "services.instances": expected int`},
		{"no name", `{"services":[{"name":"s","image":"x"}]}`, "app: name: is required"},
		{"bad name", `{"name":"My_App","services":[{"name":"s","image":"x"}]}`, `app: name: "My_App" is not a DNS label`},
		{"no services", `{"name":"a","services":[]}`, "app: services: at least one service is required"},
		{"bad app label", `{"name":"a","labels":["env"],"services":[{"name":"s","image":"x"}]}`, `app: labels[0]: "env" is not key=value`},
		{"service without name", `{"name":"a","services":[{"image":"x"}]}`, "services[0]: name: is required"},
		{"duplicate service", `{"name":"a","services":[{"name":"s","image":"x"},{"name":"s","image":"y"}]}`, `service "s": name: "s" is used by two services`},
		{"no image", `{"name":"a","services":[{"name":"s"}]}`, `service "s": image: is required`},
		{"bad image", svc(`,"image":"Not An Image"`), `service "web": image: "Not An Image" is not an image reference`},
		{"bad runtime", svc(`,"runtime":"runc"`), `service "web": runtime: "runc" is not a containerd runtime name`},
		{"bad snapshotter", svc(`,"snapshotter":"Over Lay"`), `service "web": snapshotter: "Over Lay" is not a snapshotter name`},
		{"negative uid", svc(`,"process":{"uid":-1}`), `service "web": process.uid: must be 0..4294967294, got -1`},
		{"empty command", svc(`,"process":{"args":[""]}`), `service "web": process.args[0]: the command is empty`},
		{"bad env", svc(`,"process":{"env":["NOVALUE"]}`), `service "web": process.env[0]: "NOVALUE" is not KEY=value`},
		{"relative cwd", svc(`,"process":{"cwd":"tmp"}`), `service "web": process.cwd: "tmp" is not an absolute path`},
		{"bind without source", svc(`,"mounts":[{"type":"bind","destination":"/d"}]`), `service "web": mounts[0].source: a bind mount needs an absolute source path`},
		{"mount over root", svc(`,"mounts":[{"type":"tmpfs","destination":"/"}]`), `service "web": mounts[0].destination: cannot mount over /`},
		{"unknown mount type", svc(`,"mounts":[{"type":"nfs","source":"/a","destination":"/d"}]`), `service "web": mounts[0].type: "nfs" is not a supported mount type`},
		{"negative cpu", svc(`,"resources":{"cpu":-1}`), `service "web": resources.cpu: must be 0..1024 cores, got -1`},
		{"tiny memory", svc(`,"resources":{"memory":1}`), `service "web": resources.memory: must be at least 4 MiB, got 1`},
		{"too many instances", svc(`,"instances":5000`), `service "web": instances: must be 0..1000, got 5000`},
		{"negative instances", svc(`,"instances":-1`), `service "web": instances: must be 0..1000, got -1`},
		{"replicas and instances differ", svc(`,"instances":2,"replicas":3`), `service "web": replicas: is 3 but instances is 2`},
		{"global with instances", svc(`,"global":true,"instances":2`), `service "web": instances: a global service runs one instance per eligible node`},
		{"bad node id", svc(`,"placement_preference":{"node_ids":["no de"]}`), `service "web": placement_preference.node_ids[0]: "no de" is not a node name`},
		{"endpoint protocol", svc(`,"endpoints":[{"service":"web","protocol":"ftp","port":21}]`), `service "web": endpoints[0].protocol: "ftp" is not http, https, tcp or udp`},
		{"endpoint path", svc(`,"endpoints":[{"service":"web","protocol":"http","path":"api","port":80}]`), `service "web": endpoints[0].path: "api" is not a URL path prefix starting with /`},
		{"endpoint port", svc(`,"endpoints":[{"service":"web","protocol":"http","port":0}]`), `service "web": endpoints[0].port: must be 1..65535, got 0`},
		{"endpoint tls without host", svc(`,"endpoints":[{"service":"web","protocol":"https","port":443,"tls":true}]`), `service "web": endpoints[0].tls: needs a host`},
		{"health with two checks", svc(`,"health":{"http":"/h","tcp":true,"port":80}`), `service "web": health: give exactly one of http, tcp or exec`},
		{"health with none", svc(`,"health":{"port":80}`), `service "web": health: give exactly one of http, tcp or exec`},
		{"health path", svc(`,"health":{"http":"health","port":80}`), `service "web": health.http: "health" is not a URL path starting with /`},
		{"health port", svc(`,"health":{"http":"/health"}`), `service "web": health.port: must be 1..65535, got 0`},
		{"health bad duration", svc(`,"health":{"tcp":true,"port":80,"interval":"soon"}`), `duration "soon"`},
		{"health timeout over interval", svc(`,"health":{"tcp":true,"port":80,"interval":"1s","timeout":"2s"}`), `service "web": health.timeout: must be positive and at most the interval (1s), got 2s`},
		{"health retries", svc(`,"health":{"tcp":true,"port":80,"retries":-2}`), `service "web": health.retries: must be 1..100, got -2`},
		{"port range", svc(`,"ports":[{"host":70000,"container":80}]`), `service "web": ports[0].host: must be 1..65535, got 70000`},
		{"port protocol", svc(`,"ports":[{"host":80,"container":80,"protocol":"sctp"}]`), `service "web": ports[0].protocol: "sctp" is not tcp or udp`},
		{"port without network", svc(`,"network":false,"ports":[{"host":80,"container":80}]`), `service "web": ports[0]: publishing ports needs network: true`},
		{"port twice", `{"name":"a","services":[{"name":"s","image":"x","ports":[{"host":80,"container":80}]},{"name":"t","image":"x","ports":[{"host":80,"container":81}]}]}`, `service "t": ports[0].host: port 80/tcp is already published by service "s"`},
		{"update parallel", svc(`,"update":{"parallel":-1}`), `service "web": update.parallel: must be 1..1000, got -1`},
		{"update delay", svc(`,"update":{"delay":"-5s"}`), `service "web": update.delay: must be 0..24h, got -5s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.spec))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v is not invalid argument", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error\n  %v\nwant it to contain\n  %s", err, tt.want)
			}
		})
	}
}

func TestParse_reportsEveryProblem(t *testing.T) {
	_, _, err := Parse([]byte(`{"name":"A","services":[{"name":"s"},{"name":"t","image":"x","instances":-3}]}`))
	for _, want := range []string{"app: name:", `service "s": image: is required`, `service "t": instances:`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestInstanceKey_roundTrip(t *testing.T) {
	k := InstanceKey("node-1", "web", "api", 7)
	node, app, svc, i, ok := ParseInstanceKey(k)
	if !ok || node != "node-1" || app != "web" || svc != "api" || i != 7 {
		t.Fatalf("ParseInstanceKey(%q) = %s %s %s %d %v", k, node, app, svc, i, ok)
	}
	for _, bad := range []string{"nodes/n/instances/a/s", "nodes/n/instances/a/s/x", "apps/a", "nodes/n/declined/a/s"} {
		if _, _, _, _, ok := ParseInstanceKey(bad); ok {
			t.Errorf("ParseInstanceKey(%q) ok", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(`{"name":"a","services":[{"name":"s","image":"x","replicas":2,"health":{"exec":["true"]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, _, err := Parse(data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error of another kind: %v", err)
			}
			return
		}
		// A valid spec stays valid after a round trip.
		if _, err := Check(&a); err != nil {
			t.Fatalf("normalized spec no longer valid: %v", err)
		}
	})
}
