include(GoogleTest)

# fl_layer(name "dir1;dir2" deps...): a static library from every .cc under the folders (but those
# matching the regex in FL_LAYER_EXCLUDE, when set).
function(fl_layer name dirs)
  set(srcs "")
  foreach(d ${dirs})
    file(GLOB_RECURSE s CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/${d}/*.cc)
    list(APPEND srcs ${s})
  endforeach()
  if(FL_LAYER_EXCLUDE)
    list(FILTER srcs EXCLUDE REGEX "${FL_LAYER_EXCLUDE}")
  endif()
  if(NOT srcs)
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR}/include)
    target_link_libraries(${name} INTERFACE ${ARGN})
    return()
  endif()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/include
                                     PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${name} PUBLIC Threads::Threads ${ARGN}
    PRIVATE PkgConfig::URING PkgConfig::XXHASH simdjson::simdjson fmt::fmt)
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

# fl_unit_test_dir(layer libs...): one gtest binary `unit_<layer>` from tests/unit/<layer>/*_test.cc,
# registered with CTest test by test.
function(fl_unit_test_dir layer)
  file(GLOB srcs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/unit/${layer}/*_test.cc)
  if(NOT srcs)
    return()
  endif()
  add_executable(unit_${layer} ${srcs})
  target_link_libraries(unit_${layer} PRIVATE ${ARGN} flashload_test_support GTest::gtest_main
    PkgConfig::XXHASH fmt::fmt)
  target_include_directories(unit_${layer} PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_definitions(unit_${layer} PRIVATE
    FL_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
  gtest_discover_tests(unit_${layer} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
endfunction()
