# Shared build settings for every redhare target.

function(redhare_detect_cuda)
  set(want ${REDHARE_CUDA})
  set(have OFF)
  if(NOT want STREQUAL "OFF")
    if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
      set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "" FORCE)
    endif()
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      set(have ON)
    elseif(want STREQUAL "ON")
      message(FATAL_ERROR "REDHARE_CUDA=ON but no CUDA compiler was found")
    endif()
  endif()
  set(REDHARE_HAVE_CUDA ${have} PARENT_SCOPE)
  message(STATUS "redhare: CUDA backend ${have}")
endfunction()

function(redhare_target_options target)
  # -ffp-contract=off: the compiler must not fuse a*b+c on its own, because it may fuse the same
  # expression differently in two inlined copies; kernels rely on every path summing a value the
  # same way (batch invariance) and use FMA only where they ask for it.
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wno-unused-parameter -ffp-contract=off>)
  if(REDHARE_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
endfunction()

# redhare_library(name SOURCES... DEPS...): one static library per layer.
function(redhare_library name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${A_SOURCES})
  target_include_directories(${name} PUBLIC ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(${name} PUBLIC ${A_DEPS})
  redhare_target_options(${name})
endfunction()

# redhare_test_dir(name DEPS...): every test_*.cpp in the current folder becomes part of one
# GoogleTest executable, so adding a test file needs no CMake edit.
function(redhare_test_dir name)
  cmake_parse_arguments(A "" "" "DEPS" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_*.cpp)
  if(NOT srcs)
    return()
  endif()
  add_executable(${name} ${srcs})
  target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE REDHARE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  redhare_target_options(${name})
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES ENVIRONMENT
    "REDHARE_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endfunction()

# redhare_layer(name DEPS...): a layer library made of every .cpp below the current folder.
function(redhare_layer name)
  cmake_parse_arguments(A "" "" "DEPS;EXCLUDE" ${ARGN})
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  foreach(pattern ${A_EXCLUDE})
    list(FILTER srcs EXCLUDE REGEX "${pattern}")
  endforeach()
  if(srcs)
    redhare_library(${name} SOURCES ${srcs} DEPS ${A_DEPS})
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${CMAKE_SOURCE_DIR}/src)
    target_link_libraries(${name} INTERFACE ${A_DEPS})
  endif()
endfunction()
