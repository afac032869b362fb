# Writes the build's git commit into OUT (a .cpp), only when it changed, at every build.
execute_process(COMMAND git -C "${SRC}" rev-parse --short=12 HEAD OUTPUT_VARIABLE commit
                OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  set(commit "")
endif()
execute_process(COMMAND git -C "${SRC}" status --porcelain --untracked-files=no
                OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(commit AND dirty)
  string(APPEND commit "-dirty")
endif()
set(content "// Generated at build time by cmake/build_info.cmake.\nnamespace attn::detail {\nconst char* build_commit() noexcept { return \"${commit}\"; }\nconst char* build_version() noexcept { return \"${VERSION}\"; }\n}  // namespace attn::detail\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL content)
  file(WRITE "${OUT}" "${content}")
endif()
