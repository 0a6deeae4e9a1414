# Installs qforge into a scratch prefix, builds tests/package against it, runs it.
set(prefix ${BINARY_DIR}/package_test/prefix)
set(build ${BINARY_DIR}/package_test/build)
file(REMOVE_RECURSE ${BINARY_DIR}/package_test)
foreach(step
    "${CMAKE_COMMAND};--install;${BINARY_DIR};--prefix;${prefix}"
    "${CMAKE_COMMAND};-S;${SOURCE_DIR}/tests/package;-B;${build};-DCMAKE_PREFIX_PATH=${prefix}\\;${TORCH_DIR}"
    "${CMAKE_COMMAND};--build;${build}"
    "${build}/consumer;$ENV{QFORGE_TEST_ASSETS}/resnet18_traced.pt;$ENV{QFORGE_TEST_ASSETS}/images.h5;${BINARY_DIR}/package_test/out")
  execute_process(COMMAND ${step} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "package test step failed (${rc}): ${step}")
  endif()
endforeach()
