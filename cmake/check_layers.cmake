# Layer check: every #include of a flashload header must respect the layering in
# docs/architecture.md. Run by the build (target check_layers, which every library depends on), so
# a file that includes a header of a layer it may not use fails the build, naming file and line.
#
#   cmake -DROOT=<tree holding src/ and include/> -P cmake/check_layers.cmake
#   cmake -DROOT=<tree> -DEXPECT_VIOLATION=<file> -P cmake/check_layers.cmake
#
# With EXPECT_VIOLATION (the test of the check itself), it succeeds only when the tree breaks the
# rules in exactly that file.

cmake_minimum_required(VERSION 3.25)

# What each layer may include (itself included). Lower layers never see higher ones.
set(FL_ALLOWED_common "common")
set(FL_ALLOWED_format "common;format")
set(FL_ALLOWED_io "common;format;io")
set(FL_ALLOWED_plan "common;format;plan")
set(FL_ALLOWED_sink "common;format;plan;sink")
set(FL_ALLOWED_engine "common;format;plan;io;sink;engine")
set(FL_ALLOWED_load "common;format;plan;io;sink;engine;load")
set(FL_ALLOWED_store "common;format;plan;io;sink;engine;load;store")
# Tensor-parallel loading (rank plans, communicators): above load, beside store.
set(FL_ALLOWED_dist "common;format;plan;io;sink;engine;load;dist")
set(FL_ALLOWED_cli "common;format;plan;io;sink;engine;load;store;dist;cli")

# The layer that implements each public header (include/flashload/<name>.h).
set(FL_PUBLIC_status common)
set(FL_PUBLIC_defaults common)
set(FL_PUBLIC_deadline common)
set(FL_PUBLIC_dtype common)
set(FL_PUBLIC_tensor common)
set(FL_PUBLIC_source common)
set(FL_PUBLIC_header format)
set(FL_PUBLIC_writer format)
set(FL_PUBLIC_model format)
set(FL_PUBLIC_registry io)
set(FL_PUBLIC_model_store io)
set(FL_PUBLIC_convert sink)
set(FL_PUBLIC_load_options engine)
set(FL_PUBLIC_loader load)
set(FL_PUBLIC_selection common)
set(FL_PUBLIC_communicator common)
set(FL_PUBLIC_dist dist)
set(FL_LAYERS common format io plan sink engine load store dist cli)

if(NOT ROOT)
  message(FATAL_ERROR "check_layers: pass -DROOT=<source tree>")
endif()

set(violations "")
set(violating_files "")

# check_file(<path relative to ROOT> <layer of the file>)
function(check_file rel layer)
  file(STRINGS "${ROOT}/${rel}" lines)
  set(n 0)
  foreach(line IN LISTS lines)
    math(EXPR n "${n} + 1")
    if(NOT line MATCHES "^[ \t]*#[ \t]*include[ \t]+\"([a-z_]+)/([A-Za-z0-9_]+)\\.(h|cuh)\"")
      continue()
    endif()
    set(dir "${CMAKE_MATCH_1}")
    set(name "${CMAKE_MATCH_2}")
    if(dir STREQUAL "flashload")
      set(target "${FL_PUBLIC_${name}}")
      if(NOT target)
        list(APPEND violations "${rel}:${n}: includes flashload/${name}.h, which has no layer: add it to FL_PUBLIC_* in cmake/check_layers.cmake")
        list(APPEND violating_files "${rel}")
        continue()
      endif()
    elseif(dir IN_LIST FL_LAYERS)
      set(target "${dir}")
    else()
      continue()  # tests' support/, third-party headers
    endif()
    if(NOT target IN_LIST FL_ALLOWED_${layer})
      string(REPLACE ";" ", " allowed "${FL_ALLOWED_${layer}}")
      list(APPEND violations "${rel}:${n}: includes ${dir}/${name}.h (layer ${target}) but the ${layer} layer may use only ${allowed}")
      list(APPEND violating_files "${rel}")
    endif()
  endforeach()
  set(violations "${violations}" PARENT_SCOPE)
  set(violating_files "${violating_files}" PARENT_SCOPE)
endfunction()

foreach(layer IN LISTS FL_LAYERS)
  file(GLOB_RECURSE files RELATIVE "${ROOT}" "${ROOT}/src/${layer}/*.h" "${ROOT}/src/${layer}/*.cc"
       "${ROOT}/src/${layer}/*.cu")
  foreach(f IN LISTS files)
    check_file("${f}" "${layer}")
  endforeach()
endforeach()
file(GLOB public RELATIVE "${ROOT}" "${ROOT}/include/flashload/*.h")
foreach(f IN LISTS public)
  get_filename_component(name "${f}" NAME_WE)
  set(layer "${FL_PUBLIC_${name}}")
  if(NOT layer)
    list(APPEND violations "${f}: a public header with no layer: add it to FL_PUBLIC_* in cmake/check_layers.cmake")
    list(APPEND violating_files "${f}")
    continue()
  endif()
  check_file("${f}" "${layer}")
endforeach()

list(REMOVE_DUPLICATES violating_files)
if(DEFINED EXPECT_VIOLATION)
  if(NOT violating_files STREQUAL EXPECT_VIOLATION)
    string(REPLACE ";" "\n  " v "${violations}")
    message(FATAL_ERROR "check_layers: expected a violation in exactly ${EXPECT_VIOLATION}, got: [${violating_files}]\n  ${v}")
  endif()
  string(REPLACE ";" "\n  " v "${violations}")
  message(STATUS "check_layers: the planted include is refused, as it must be:\n  ${v}")
  return()
endif()
if(violations)
  string(REPLACE ";" "\n  " v "${violations}")
  message(FATAL_ERROR "check_layers: includes across layers that the layering forbids "
                      "(docs/architecture.md):\n  ${v}")
endif()
