# cmake -DIN=page.html -DOUT=page.c -DNAME=symbol -P embed.cmake
# Writes OUT: `const unsigned char NAME[]` holding IN's bytes plus a terminating 0, and
# `const unsigned long NAME_len` (without the 0). Plain CMake: no xxd, no other build step.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n_hex)
math(EXPR n_bytes "${n_hex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
file(WRITE "${OUT}" "/* generated from ${IN} by coordinator/web/embed.cmake: do not edit */\n"
  "const unsigned char ${NAME}[] = {\n${body}0x00};\n"
  "const unsigned long ${NAME}_len = ${n_bytes};\n")
