# Turns a Stellar binary's --help output (already laid out as a manual page:
# NAME, SYNOPSIS, DESCRIPTION, ... headings at column 0, text indented by 4,
# the text of an item indented by 8) into roff for man(7).
# Variables: title, section, date, source, manual.
function esc(s) {
	gsub(/\\/, "\\e", s)
	gsub(/-/, "\\-", s)
	if (s ~ /^[.']/) s = "\\&" s
	return s
}
BEGIN {
	printf ".TH %s %s \"%s\" \"%s\" \"%s\"\n", toupper(title), section, date, source, manual
}
/^[A-Z][A-Z0-9 ]*$/ { sec = $0; print ".SH " sec; para = 0; next }
/^[[:space:]]*$/ { if (para) { print ".PP"; para = 0 }; next }
{
	line = $0
	match(line, /^ */); ind = RLENGTH
	sub(/^ +/, "", line)
	if (sec == "SYNOPSIS") { print esc(line); print ".br"; next }
	if (ind >= 8) { print esc(line); para = 1; next }
	# an item: indented by 4 and followed by a line indented by 8
	if ((getline nxt) > 0) {
		match(nxt, /^ */)
		if (RLENGTH >= 8 && nxt !~ /^[[:space:]]*$/) {
			print ".TP"; print ".B " esc(line)
			sub(/^ +/, "", nxt); print esc(nxt); para = 1
			next
		}
		print esc(line); para = 1
		# handle the line read ahead as if it came now
		if (nxt ~ /^[A-Z][A-Z0-9 ]*$/) { sec = nxt; print ".SH " sec; para = 0; next }
		if (nxt ~ /^[[:space:]]*$/) { print ".PP"; para = 0; next }
		match(nxt, /^ */); sub(/^ +/, "", nxt)
		if (sec == "SYNOPSIS") { print esc(nxt); print ".br"; next }
		print esc(nxt); para = 1
		next
	}
	print esc(line)
}
