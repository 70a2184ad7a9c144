//! stele-image: the build side of stele.
