package logdriver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"syscall"
)

// DefaultJournalSocket is where systemd-journald takes native-protocol
// entries.
const DefaultJournalSocket = "/run/systemd/journal/socket"

// journal sends entries to a journald native-protocol socket (what
// sd_journal_send does): one datagram per entry, each field "KEY=value\n",
// or "KEY\n", its length as 64-bit little-endian and the value when the
// value holds a newline. An entry too large for a datagram goes in an
// unlinked file whose descriptor is passed instead.
type journal struct {
	conn *net.UnixConn
	addr *net.UnixAddr
}

// openJournal connects to the socket at path; an error when none listens.
func openJournal(path string) (*journal, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("find journal socket: %w", err)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("open journal client socket: %w", err)
	}
	return &journal{conn: conn, addr: &net.UnixAddr{Name: path, Net: "unixgram"}}, nil
}

func (j *journal) Close() error { return j.conn.Close() }

// encodeEntry is the native-protocol form of one entry (fields sorted by
// name, MESSAGE and PRIORITY among them).
func encodeEntry(msg string, priority int, fields map[string]string) []byte {
	var b bytes.Buffer
	put := func(k, v string) {
		if strings.ContainsRune(v, '\n') {
			b.WriteString(k)
			b.WriteByte('\n')
			_ = binary.Write(&b, binary.LittleEndian, uint64(len(v)))
			b.WriteString(v)
			b.WriteByte('\n')
			return
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	put("MESSAGE", msg)
	put("PRIORITY", fmt.Sprint(priority))
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		put(k, fields[k])
	}
	return b.Bytes()
}

// Send writes one entry.
func (j *journal) Send(msg string, priority int, fields map[string]string) error {
	data := encodeEntry(msg, priority, fields)
	_, _, err := j.conn.WriteMsgUnix(data, nil, j.addr)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EMSGSIZE) && !errors.Is(err, syscall.ENOBUFS) {
		return fmt.Errorf("send journal entry: %w", err)
	}
	// Too large for a datagram: pass an unlinked file holding it.
	f, err := os.CreateTemp("/dev/shm", "stellar-journal-")
	if err != nil {
		if f, err = os.CreateTemp("", "stellar-journal-"); err != nil {
			return fmt.Errorf("make file for a large journal entry: %w", err)
		}
	}
	defer f.Close()
	_ = os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write large journal entry: %w", err)
	}
	if _, _, err := j.conn.WriteMsgUnix(nil, syscall.UnixRights(int(f.Fd())), j.addr); err != nil {
		return fmt.Errorf("send large journal entry: %w", err)
	}
	return nil
}
