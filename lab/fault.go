package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Faults is the set of network faults in force. It lives in the state dir
// and is re-applied whenever a node boots.
type Faults struct {
	// Partitions are groups of nodes cut from every node outside their
	// group; nodes in no group form one more group. The client reaches all.
	Partitions [][]string `json:"partitions,omitempty"`
	// DelayMS delays packets arriving at a node, per node.
	DelayMS map[string]int `json:"delay_ms,omitempty"`
	// LossPercent drops packets going to a node, per node.
	LossPercent map[string]float64 `json:"loss_percent,omitempty"`
}

func (l *Lab) faultsFile() string { return filepath.Join(l.StateDir, "faults.json") }

// Faults returns the faults in force.
func (l *Lab) Faults() (Faults, error) {
	var f Faults
	b, err := os.ReadFile(l.faultsFile())
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal(b, &f)
}

func (l *Lab) changeFaults(ctx context.Context, change func(*Faults) error) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	f, err := l.Faults()
	if err != nil {
		return fmt.Errorf("read faults: %w", err)
	}
	if err := change(&f); err != nil {
		return err
	}
	if err := writeJSON(l.faultsFile(), f); err != nil {
		return err
	}
	return l.applyFaults(ctx)
}

// Partition cuts nodes from every node not named, until Heal. Calling it
// again makes another group (nodes move out of their old group).
func (l *Lab) Partition(ctx context.Context, nodes ...string) error {
	if len(nodes) == 0 {
		return errors.New("partition: name at least one node")
	}
	for _, n := range nodes {
		if _, err := NodeIndex(n); err != nil {
			return err
		}
	}
	return l.changeFaults(ctx, func(f *Faults) error {
		var groups [][]string
		for _, g := range f.Partitions {
			g = slices.DeleteFunc(slices.Clone(g), func(n string) bool { return slices.Contains(nodes, n) })
			if len(g) > 0 {
				groups = append(groups, g)
			}
		}
		f.Partitions = append(groups, slices.Clone(nodes))
		return nil
	})
}

// Delay delays every packet arriving at node by d (0 removes the delay).
func (l *Lab) Delay(ctx context.Context, node string, d time.Duration) error {
	if _, err := NodeIndex(node); err != nil {
		return err
	}
	return l.changeFaults(ctx, func(f *Faults) error {
		if f.DelayMS == nil {
			f.DelayMS = map[string]int{}
		}
		f.DelayMS[node] = int(d / time.Millisecond)
		if d <= 0 {
			delete(f.DelayMS, node)
		}
		return nil
	})
}

// Loss drops percent % of the packets going to node (0 removes the loss).
func (l *Lab) Loss(ctx context.Context, node string, percent float64) error {
	if _, err := NodeIndex(node); err != nil {
		return err
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("loss %v%%: want 0..100", percent)
	}
	return l.changeFaults(ctx, func(f *Faults) error {
		if f.LossPercent == nil {
			f.LossPercent = map[string]float64{}
		}
		f.LossPercent[node] = percent
		if percent == 0 {
			delete(f.LossPercent, node)
		}
		return nil
	})
}

// Heal removes every network fault.
func (l *Lab) Heal(ctx context.Context) error {
	return l.changeFaults(ctx, func(f *Faults) error {
		*f = Faults{}
		return nil
	})
}

// Kill sends SIGKILL to the main process of unit inside node.
func (l *Lab) Kill(ctx context.Context, node, unit string) error {
	out, err := l.Output(ctx, node, "systemctl", "show", "--property=MainPID", "--value", unit)
	if err != nil {
		return fmt.Errorf("find main pid of %s on %s: %w", unit, node, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || pid == 0 {
		return fmt.Errorf("kill %s on %s: the unit has no main process", unit, node)
	}
	if _, err := l.Output(ctx, node, "kill", "-9", strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("kill %s on %s: %w", unit, node, err)
	}
	l.Log.Info("killed", "node", node, "unit", unit, "pid", pid)
	return nil
}

const faultTable = "stellar_lab_faults"

// applyFaults makes the switch's nftables table and the delay helpers match
// the faults file.
func (l *Lab) applyFaults(ctx context.Context) error {
	f, err := l.Faults()
	if err != nil {
		return err
	}
	if !netnsExists(l.SwitchNS()) {
		return nil
	}
	ruleset := faultRuleset(f)
	script := fmt.Sprintf("table bridge %s {}\ndelete table bridge %s\n%s", faultTable, faultTable, ruleset)
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+netnsPath(l.SwitchNS()), "--", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("load fault rules: %w: %s\n%s", err, strings.TrimSpace(string(out)), script)
	}
	return l.applyDelays(ctx, f)
}

// faultRuleset renders partitions and loss as a bridge-family nftables
// table for the switch: ports are named after the nodes.
func faultRuleset(f Faults) string {
	var rules []string
	for _, g := range f.Partitions {
		// A member talks to its group and the client only, both ways.
		allowed := []string{strconv.Quote(Client)}
		for _, n := range g {
			allowed = append(allowed, strconv.Quote(n))
		}
		set := strings.Join(allowed, ", ")
		for _, n := range g {
			rules = append(rules,
				fmt.Sprintf("iifname %q oifname != { %s } drop", n, set),
				fmt.Sprintf("oifname %q iifname != { %s } drop", n, set))
		}
	}
	nodes := make([]string, 0, len(f.LossPercent))
	for n := range f.LossPercent {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, n := range nodes {
		if p := int(f.LossPercent[n] * 100); p >= 10000 {
			rules = append(rules, fmt.Sprintf("oifname %q drop", n))
		} else {
			rules = append(rules, fmt.Sprintf("oifname %q numgen random mod 10000 < %d drop", n, p))
		}
	}
	if len(rules) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table bridge %s {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n", faultTable)
	for _, r := range rules {
		fmt.Fprintf(&b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}
